import Foundation
import Testing
import TallyCore
@testable import TallyPricing

@Suite("Pricing config")
struct PricingConfigTests {
    static let goodPlan = """
          - id: p
            currency: USD
            charges:
              - metric: api_calls
                model: per_unit
                unit_price: "0.001"
        """

    /// (YAML after the metrics, the place, a part of the problem).
    static let invalid: [(String, String, String)] = [
        (
            "plans:\n" + goodPlan + """

                  - id: q
                    currency: USD
                    charges:
                      - metric: api_calls
                        model: graduated
                        tiers:
                          - up_to: 1000
                            unit_price: "0.1"
                          - up_to: 5000
                            unit_price: "0.05"
                          - up_to: 5000
                            unit_price: "0.01"
                          - unit_price: "0.001"
                """,
            "plans[1].charges[0].tiers[2].up_to", "tiers must increase: 5000 is not above the previous tier's up_to 5000"
        ),
        (
            """
            plans:
              - id: p
                currency: USD
                charges:
                  - metric: api_call
                    model: per_unit
                    unit_price: "0.001"
            """,
            "plans[0].charges[0].metric", "unknown metric 'api_call'; defined metrics: api_calls, bytes_out, seats"
        ),
        (
            """
            plans:
              - id: p
                currency: USX
                charges: []
            """,
            "plans[0].currency", "unknown currency 'USX'"
        ),
        (
            "plans:\n" + goodPlan + """

                assignments:
                  - tenant: acme
                    plan: p
                    from: 2026-01-01T00:00:00Z
                    until: 2026-05-01T00:00:00Z
                  - tenant: other
                    plan: p
                    from: 2026-01-01T00:00:00Z
                  - tenant: acme
                    plan: p
                    from: 2026-04-15T00:00:00Z
                """,
            "assignments[2]", "overlaps assignments[0]: tenant 'acme' would be on 'p' and 'p' at once"
        ),
        (
            """
            plans:
              - id: p
                currency: USD
                charges:
                  - metric: api_calls
                    model: volume
                    tiers:
                      - up_to: 10
                        unit_price: "0.1"
                      - up_to: 20
                        unit_price: "0.05"
            """,
            "plans[0].charges[0].tiers[1].up_to", "the last tier must have no up_to"
        ),
        (
            """
            plans:
              - id: p
                currency: USD
                charges:
                  - metric: api_calls
                    model: per_unit
                    unit_prise: "0.001"
            """,
            "plans[0].charges[0].unit_prise", "unknown key 'unit_prise'"
        ),
        (
            """
            plans:
              - id: p
                currency: USD
                charges:
                  - metric: api_calls
                    model: per_unit
                    unit_price: 0.0000000000001
            """,
            "plans[0].charges[0].unit_price", "'0.0000000000001' has more than 12 decimal places"
        ),
        (
            """
            plans:
              - id: p
                currency: USD
                charges:
                  - metric: api_calls
                    model: per_unit
                    unit_price: 1e-3
            """,
            "plans[0].charges[0].unit_price", "'1e-3' is not a plain decimal number"
        ),
        (
            """
            plans:
              - id: p
                currency: USD
                charges:
                  - metric: bytes_out
                    price_by: region
                    prices:
                      - model: per_unit
                        unit_price: "1"
            """,
            "plans[0].charges[0].price_by", "metric 'bytes_out' is not grouped by 'region'"
        ),
        (
            """
            plans:
              - id: p
                currency: USD
                charges:
                  - metric: api_calls
                    unit_price: "1"
            """,
            "plans[0].charges[0].model", "is required"
        ),
        (
            "plans:\n" + goodPlan + "\ndefault_plan: gold\n",
            "default_plan", "unknown plan 'gold'"
        ),
        (
            """
            plans:
              - id: p
                currency: USD
                billing_period: weekly
                charges: []
            """,
            "plans[0].billing_period", "unsupported billing period 'weekly'"
        ),
        (
            "plans:\n" + goodPlan + """

                assignments:
                  - tenant: acme
                    plan: gold
                    from: 2026-01-01T00:00:00Z
                """,
            "assignments[0].plan", "unknown plan 'gold'"
        ),
        (
            "plans:\n" + goodPlan + """

                assignments:
                  - tenant: acme
                    plan: p
                    from: 2026-04-01
                """,
            "assignments[0].from", "is not an RFC 3339 timestamp"
        ),
        (
            """
            plans:
              - id: p
                currency: USD
                charges:
                  - metric: api_calls
                    model: package
                    package_size: 0
                    package_price: "5"
            """,
            "plans[0].charges[0].package_size", "must be greater than 0"
        ),
        (
            """
            plans:
              - id: p
                currency: USD
                charges:
                  - metric: api_calls
                    model: per_unit
                    unit_price: "0.001"
                  - metric: api_calls
                    model: per_unit
                    unit_price: "0.002"
            """,
            "plans[0].charges[1].metric", "metric 'api_calls' is already charged in this plan"
        ),
    ]

    @Test("validation errors name the place and the problem", arguments: invalid)
    func validation(_ yaml: String, _ place: String, _ problem: String) {
        let issues = configIssues(testMetrics + yaml)
        #expect(issues.contains { $0.place == place && $0.problem.contains(problem) }, "got: \(issues.map(\.description))")
    }

    @Test("an error names the file, line and column, and every problem is reported at once")
    func errorText() {
        let yaml = """
            metrics:
              - name: api_calls
                aggregation: median
            plans:
              - id: p
                currency: EURO
                charges: []
            """
        do {
            _ = try PricingConfigLoader.load(yaml: yaml, file: "pricing.yaml")
            Issue.record("loaded an invalid config")
        } catch {
            #expect(error.issues.map(\.place) == ["metrics[0].aggregation", "plans[0].currency"])
            #expect(
                error.description.split(separator: "\n").first
                    == "pricing.yaml:3:18: metrics[0].aggregation: unknown aggregation 'median'; expected sum, count, max, min, avg, weighted_sum, unique_count or latest"
            )
        }
    }

    @Test("a missing file and bad YAML are errors too")
    func unreadable() {
        #expect(throws: PricingConfigError.self) { try PricingConfigLoader.load(file: "/nonexistent/pricing.yaml") }
        #expect(configIssues("plans: [").first?.problem.hasPrefix("not valid YAML") == true)
        #expect(configIssues("").first?.problem == "the file is empty")
    }

    @Test("prices reach the parser as written, never as binary floats")
    func exactLexemes() throws {
        // As a Double this would be 1e-12 (text the decimal parser refuses); read as written it
        // is exactly one pico-unit.
        let yaml =
            testMetrics + """
                plans:
                  - id: p
                    currency: USD
                    charges:
                      - metric: api_calls
                        model: per_unit
                        unit_price: 0.000000000001
                default_plan: p
                """
        let config = try PricingConfigLoader.load(yaml: yaml)
        #expect(config.plans.first?.usageCharges.first?.prices.first?.model == .perUnit(UnitPrice(picos: 1)))
    }

    @Test("metric definitions: aggregations, group-by and filters")
    func metrics() throws {
        let yaml = """
            metrics:
              - name: users
                aggregation: unique_count
                property: user_id
              - name: exports
                aggregation: count
                filters:
                  - property: status
                    not_in: ["500", "503"]
                  - property: region
                    in: [eu, us]
            plans: []
            """
        let config = try PricingConfigLoader.load(yaml: yaml)
        #expect(config.metric(named: "users")?.aggregation == .uniqueCount(property: "user_id"))
        let exports = try #require(config.metric(named: "exports"))
        #expect(exports.matches(["status": "200", "region": "eu"]))
        #expect(!exports.matches(["status": "503", "region": "eu"]))
        #expect(!exports.matches(["status": "200", "region": "ap"]))
        #expect(!exports.matches(["status": "200"]))
        let missing = configIssues("metrics:\n  - name: users\n    aggregation: unique_count\nplans: []\n")
        #expect(missing.map(\.place) == ["metrics[0].property"])
    }

    @Test("a metric's unit is for people: optional, short, printable")
    func metricUnits() throws {
        let config = try PricingConfigLoader.load(
            yaml: "metrics:\n  - name: bytes_out\n    aggregation: sum\n    unit: bytes\n  - name: calls\n    aggregation: sum\nplans: []\n")
        #expect(config.metrics.map(\.unit) == ["bytes", nil])
        for bad in ["\"\"", "a-unit-longer-than-16", "\"a\\tb\""] {
            let issues = configIssues("metrics:\n  - name: m\n    aggregation: sum\n    unit: \(bad)\nplans: []\n")
            #expect(issues.map(\.place) == ["metrics[0].unit"], "\(bad)")
        }
    }

    static let examplePath = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("deploy/pricing.example.yaml").path

    @Test("deploy/pricing.example.yaml loads and prices the reference workload's metrics")
    func exampleFile() throws {
        let config = try PricingConfigLoader.load(file: Self.examplePath)
        #expect(config.metrics.map(\.name) == ["api_calls", "bytes_out", "compute_ms", "exports"])
        #expect(config.metrics.map(\.unit) == [nil, "bytes", "ms", nil])
        #expect(config.plans.map(\.id) == ["starter", "pro", "eu-business", "jp-standard"])
        let engine = PricingEngine(config: config)
        let usage: [UsageKey: Quantity] = [
            UsageKey(metric: "api_calls"): q("120000"),
            UsageKey(metric: "bytes_out"): q("2500000000"),  // 1e9 × 0.00000009 + 1.5e9 × 0.00000007 = 90 + 105
            UsageKey(metric: "compute_ms"): q("2000000"),  // tier 2: × 0.00001 = 20.00
            UsageKey(metric: "exports"): q("250"),  // 3 packages × 5.00
        ]
        let starter = try engine.invoice(tenant: "someone", period: april, usage: usage)
        #expect(starter.lines.map(\.amount.amountText) == ["70.00", "195.00", "20.00", "15.00", "29.00"])
        #expect(starter.total.description == "329.00 USD")

        let jp = try engine.invoice(tenant: "tenant-0003", period: april, usage: usage)
        #expect(jp.currency == .jpy)
        // 70,000 × 0.15 = 10500; 2.5e9 × 0.00001 = 25000; 2e6 × 0.0015 = 3000; 3 × 700; 3000
        #expect(jp.total.description == "43600 JPY")

        let upgraded = try engine.segments(tenant: "tenant-0004", period: april)
        #expect(upgraded.map(\.planID) == ["starter", "pro"])

        #expect(config.alerts.map(\.name) == ["starter-free-calls-80", "calls-10m", "spend-1000-usd"])
        #expect(config.alerts.map(\.kind) == ["percent_of_free", "quantity", "amount"])
        #expect(config.alerts[0].plan == "starter" && config.alerts[0].threshold == .percentOfFree(80))
        #expect(config.alerts[2].metric == nil && config.alerts[2].thresholdText == "1000.00 USD")
    }
}
