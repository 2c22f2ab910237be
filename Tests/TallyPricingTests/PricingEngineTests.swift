import Testing
import TallyCore
@testable import TallyPricing

@Suite("Pricing engine")
struct PricingEngineTests {
    static let seedPlan = """
          - id: p
            currency: USD
            charges:
              - metric: api_calls
                model: per_unit
                free: 50000
                unit_price: 0.001
        """

    @Test("the seed's example: 120,000 calls, 50,000 free, then $0.001 is $70.00")
    func seedExample() throws {
        let invoice = try engine(plans: Self.seedPlan).invoice(tenant: "123", period: april, usage: [UsageKey(metric: "api_calls"): q("120000")])
        let line = try #require(invoice.line("api_calls"))
        #expect(line.quantity == q("120000"))
        #expect(line.freeQuantity == q("50000"))
        #expect(line.steps.count == 1)
        #expect(line.steps.first?.quantity == q("70000"))
        #expect(line.steps.first?.unitPrice.description == "0.001")
        #expect(line.amount.description == "70.00 USD")
        #expect(invoice.total.description == "70.00 USD")
    }

    static let tiers = """
                tiers:
                  - up_to: 1000
                    unit_price: "0.10"
                  - up_to: 5000
                    unit_price: "0.05"
                  - unit_price: "0.01"
        """

    static func tieredPlan(_ model: String) -> String {
        """
          - id: p
            currency: USD
            charges:
              - metric: api_calls
                model: \(model)
        \(tiers)
        """
    }

    static let graduatedCases: [(String, String, [Int])] = [
        ("0", "0.00", []),
        ("1", "0.10", [1]),
        ("999", "99.90", [1]),
        ("1000", "100.00", [1]),  // last unit of tier 1
        ("1001", "100.05", [1, 2]),  // first unit of tier 2
        ("1000.5", "100.02", [1, 2]),  // 100.025: a tie, 2 is even
        ("5000", "300.00", [1, 2]),  // last unit of tier 2
        ("5001", "300.01", [1, 2, 3]),  // first unit of tier 3
        ("100000", "1250.00", [1, 2, 3]),
    ]

    @Test("graduated tiers at every boundary", arguments: graduatedCases)
    func graduated(_ quantity: String, _ expected: String, _ tiersUsed: [Int]) throws {
        let invoice = try engine(plans: Self.tieredPlan("graduated")).invoice(
            tenant: "t", period: april, usage: [UsageKey(metric: "api_calls"): q(quantity)])
        let line = try #require(invoice.line("api_calls"))
        #expect(line.amount.amountText == expected)
        #expect(line.steps.compactMap(\.tier) == tiersUsed)
        var stepSum = Quantity.zero
        for step in line.steps { stepSum = try stepSum.adding(step.quantity) }
        #expect(stepSum == q(quantity))
    }

    static let volumeCases: [(String, String, Int)] = [
        ("0", "0.00", 1),
        ("1", "0.10", 1),
        ("1000", "100.00", 1),  // last unit of tier 1: all at 0.10
        ("1001", "50.05", 2),  // first unit of tier 2: all at 0.05
        ("5000", "250.00", 2),
        ("5001", "50.01", 3),
        ("100000", "1000.00", 3),
    ]

    @Test("volume tiers at every boundary", arguments: volumeCases)
    func volume(_ quantity: String, _ expected: String, _ tier: Int) throws {
        let invoice = try engine(plans: Self.tieredPlan("volume")).invoice(
            tenant: "t", period: april, usage: [UsageKey(metric: "api_calls"): q(quantity)])
        let line = try #require(invoice.line("api_calls"))
        #expect(line.amount.amountText == expected)
        #expect(line.steps.map(\.tier) == [tier])
    }

    static let packageCases: [(String, String, String)] = [
        ("0", "0.00", "0"),
        ("1", "5.00", "1"),
        ("100", "5.00", "1"),
        ("101", "10.00", "2"),
        ("100.5", "10.00", "2"),
        ("250", "15.00", "3"),
        ("300", "15.00", "3"),
    ]

    @Test("packages are rounded up", arguments: packageCases)
    func package(_ quantity: String, _ expected: String, _ packages: String) throws {
        let plan = """
              - id: p
                currency: USD
                charges:
                  - metric: api_calls
                    model: package
                    package_size: 100
                    package_price: "5.00"
            """
        let line = try #require(
            try engine(plans: plan).invoice(tenant: "t", period: april, usage: [UsageKey(metric: "api_calls"): q(quantity)]).line("api_calls"))
        #expect(line.amount.amountText == expected)
        #expect(line.steps.first?.quantity == q(packages))
    }

    @Test("a free allowance comes before packages and tiers")
    func freeBeforeModel() throws {
        let plan = """
              - id: p
                currency: USD
                charges:
                  - metric: api_calls
                    model: package
                    free: 50
                    package_size: 100
                    package_price: "5.00"
                  - metric: bytes_out
                    model: graduated
                    free: 10
            \(Self.tiers)
            """
        let e = try engine(plans: plan)
        let usage: [UsageKey: Quantity] = [UsageKey(metric: "api_calls"): q("150"), UsageKey(metric: "bytes_out"): q("1010")]
        let invoice = try e.invoice(tenant: "t", period: april, usage: usage)
        #expect(invoice.line("api_calls")?.amount.amountText == "5.00")
        #expect(invoice.line("bytes_out")?.amount.amountText == "100.00")  // 1,000 billable: all tier 1
        #expect(invoice.line("bytes_out")?.freeQuantity == q("10"))
        let more = try e.invoice(tenant: "t", period: april, usage: [UsageKey(metric: "api_calls"): q("151")])
        #expect(more.line("api_calls")?.amount.amountText == "10.00")
    }

    @Test("zero usage: every charge has a line of 0.00; a flat fee is still due")
    func zeroUsage() throws {
        let plan = """
              - id: p
                currency: USD
                charges:
                  - metric: api_calls
                    model: per_unit
                    unit_price: 0.001
                  - metric: bytes_out
                    model: graduated
            \(Self.tiers)
                  - flat_fee: "29.00"
                    name: Platform fee
            """
        let invoice = try engine(plans: plan).invoice(tenant: "t", period: april, usage: [:])
        #expect(invoice.lines.map(\.description) == ["api_calls", "bytes_out", "Platform fee"])
        #expect(invoice.line("api_calls")?.amount.amountText == "0.00")
        #expect(invoice.line("bytes_out")?.amount.amountText == "0.00")
        #expect(invoice.line("Platform fee")?.kind == .flatFee)
        #expect(invoice.line("Platform fee")?.amount.amountText == "29.00")
        #expect(invoice.total.description == "29.00 USD")
    }

    static let minimumPlan = """
          - id: p
            currency: USD
            minimum_commitment: "500.00"
            charges:
              - metric: api_calls
                model: per_unit
                unit_price: 0.001
              - flat_fee: "100"
        """

    @Test(
        "minimum commitment: a true-up for the shortfall of usage lines only",
        arguments: [
            ("100000", "400.00", "600.00"),
            ("499990", "0.01", "600.00"),
            ("500000", nil, "600.00"),
            ("600000", nil, "700.00"),
            ("0", "500.00", "600.00"),
        ] as [(String, String?, String)])
    func minimumCommitment(_ calls: String, _ trueUp: String?, _ total: String) throws {
        let invoice = try engine(plans: Self.minimumPlan).invoice(
            tenant: "t", period: april, usage: [UsageKey(metric: "api_calls"): q(calls)])
        #expect(invoice.lines.first { $0.kind == .minimumTrueUp }?.amount.amountText == trueUp)
        #expect(invoice.total.amountText == total)
    }

    static let byEndpointPlan = """
          - id: p
            currency: USD
            charges:
              - metric: api_calls
                price_by: endpoint
                prices:
                  - when: /api/v1/search
                    model: per_unit
                    unit_price: "0.002"
                  - model: per_unit
                    free: 1000
                    unit_price: "0.001"
        """

    @Test("a price by property value, with a fallback for other values")
    func priceByProperty() throws {
        let usage: [UsageKey: Quantity] = [
            UsageKey(metric: "api_calls", propertyValue: "/api/v1/search"): q("1000"),
            UsageKey(metric: "api_calls", propertyValue: "/api/v1/items"): q("3000"),
            UsageKey(metric: "api_calls", propertyValue: "/api/v1/users"): q("500"),
        ]
        let invoice = try engine(plans: Self.byEndpointPlan).invoice(tenant: "t", period: april, usage: usage)
        #expect(invoice.line("api_calls (endpoint /api/v1/search)")?.amount.amountText == "2.00")
        #expect(invoice.line("api_calls (endpoint /api/v1/items)")?.amount.amountText == "2.00")  // 1,000 free
        #expect(invoice.line("api_calls (endpoint /api/v1/users)")?.amount.amountText == "0.00")
        #expect(invoice.total.amountText == "4.00")
    }

    @Test("usage that the plan cannot price is an error, never skipped")
    func unpricedUsage() throws {
        let noFallback = """
              - id: p
                currency: USD
                charges:
                  - metric: api_calls
                    price_by: region
                    prices:
                      - when: eu
                        model: per_unit
                        unit_price: "0.002"
            """
        let e = try engine(plans: noFallback)
        #expect(
            pricingError { _ = try e.invoice(tenant: "t", period: april, usage: [UsageKey(metric: "api_calls", propertyValue: "us"): q("1")]) }
                == .unpricedValue(metric: "api_calls", property: "region", value: "us"))
        #expect(
            pricingError { _ = try e.invoice(tenant: "t", period: april, usage: [UsageKey(metric: "api_calls"): q("1")]) }
                == .usageNotSplit(metric: "api_calls", property: "region"))
        let seed = try engine(plans: Self.seedPlan)
        #expect(
            pricingError { _ = try seed.invoice(tenant: "t", period: april, usage: [UsageKey(metric: "api_calls", propertyValue: "eu"): q("1")]) }
                == .unexpectedPropertyValue(metric: "api_calls", value: "eu"))
        #expect(
            pricingError { _ = try seed.invoice(tenant: "t", period: april, usage: [UsageKey(metric: "nope"): q("1")]) } == .unknownMetric("nope"))
        #expect(
            pricingError { _ = try seed.invoice(tenant: "t", period: april, usage: [UsageKey(metric: "api_calls"): q("-1")]) }
                == .negativeUsage(metric: "api_calls", quantity: q("-1")))
    }

    @Test(
        "several currencies, each rounded to its own minor units",
        arguments: [
            ("USD", "0.0015", "10001", "15.00"),  // 15.0015
            ("EUR", "0.0009", "100005", "90.00"),  // 90.0045
            ("JPY", "0.15", "10001", "1500"),  // 1500.15
            ("JPY", "0.15", "10010", "1502"),  // 1501.5: tie, 1501 is odd -> 1502
            ("JPY", "0.15", "10030", "1504"),  // 1504.5: tie, 1504 is even -> 1504
            ("KWD", "0.0005", "3", "0.002"),  // 0.0015: tie -> 0.002
            ("GBP", "0.001", "25", "0.02"),  // 0.025: tie -> 0.02
            ("GBP", "0.001", "35", "0.04"),  // 0.035: tie -> 0.04
        ])
    func currencies(_ code: String, _ price: String, _ calls: String, _ expected: String) throws {
        let plan = """
              - id: p
                currency: \(code)
                charges:
                  - metric: api_calls
                    model: per_unit
                    unit_price: "\(price)"
            """
        let invoice = try engine(plans: plan).invoice(tenant: "t", period: april, usage: [UsageKey(metric: "api_calls"): q(calls)])
        #expect(invoice.currency.code == code)
        #expect(invoice.total.amountText == expected)
        #expect(invoice.total.isRoundedToMinorUnits)
    }

    static let changePlans = """
          - id: a
            currency: USD
            charges:
              - metric: api_calls
                model: per_unit
                free: 50000
                unit_price: "0.001"
              - metric: seats
                model: per_unit
                unit_price: "10"
              - flat_fee: "30.00"
                name: Platform fee
          - id: b
            currency: USD
            minimum_commitment: "100"
            charges:
              - metric: api_calls
                model: per_unit
                free: 50000
                unit_price: "0.0005"
              - metric: seats
                model: per_unit
                unit_price: "8"
              - flat_fee: "60.00"
                name: Platform fee
        """

    @Test("a plan change inside a period: usage split at the instant, tiers continue, fees prorated")
    func planChange() throws {
        let e = try engine(
            plans: Self.changePlans, defaultPlan: "a",
            assignments: """
                  - tenant: acme
                    plan: b
                    from: 2026-04-16T00:00:00Z
                """)
        let segments = try e.segments(tenant: "acme", period: april)
        #expect(
            segments == [
                PlanSegment(planID: "a", start: time("2026-04-01T00:00:00Z"), end: time("2026-04-16T00:00:00Z")),
                PlanSegment(planID: "b", start: time("2026-04-16T00:00:00Z"), end: time("2026-05-01T00:00:00Z")),
            ])
        let usage = [
            SegmentUsage(segment: segments[0], quantities: [UsageKey(metric: "api_calls"): q("80000"), UsageKey(metric: "seats"): q("3")]),
            SegmentUsage(segment: segments[1], quantities: [UsageKey(metric: "api_calls"): q("40000"), UsageKey(metric: "seats"): q("5")]),
        ]
        let invoice = try e.invoice(tenant: "acme", period: april, usage: usage)
        let summary = invoice.lines.map { "\($0.planID) \($0.description) \($0.quantity) free=\($0.freeQuantity) \($0.amount.amountText)" }
        #expect(
            summary == [
                "a api_calls 80000 free=50000 30.00",  // 30,000 billable on plan a
                "a seats 3 free=0 30.00",  // non-additive: priced per segment
                "a Platform fee 0 free=0 15.00",  // 30.00 × 15/30 days
                "b api_calls 40000 free=0 20.00",  // continues at unit 80,001: the allowance is not granted again
                "b seats 5 free=0 40.00",
                "b Platform fee 0 free=0 30.00",  // 60.00 × 15/30 days; usage 60.00 meets the minimum 100 × 15/30
            ])
        #expect(invoice.total.amountText == "165.00")
        // One segment's usage via the single-segment call is refused: the period is split.
        #expect(pricingError { _ = try e.invoice(tenant: "acme", period: april, usage: [:]) } != nil)
    }

    @Test("a prorated flat fee is rounded once per line; a whole period is charged exactly")
    func proratedFee() throws {
        let plans = """
              - id: a
                currency: USD
                charges:
                  - flat_fee: "10.00"
              - id: b
                currency: USD
                charges:
                  - flat_fee: "10.00"
            """
        let e = try engine(
            plans: plans, defaultPlan: "a",
            assignments: """
                  - tenant: acme
                    plan: b
                    from: 2026-04-11T00:00:00Z
                    until: 2026-05-01T00:00:00Z
                """)
        let invoice = try e.invoice(tenant: "acme", period: april, usage: [])
        #expect(invoice.lines.map(\.amount.amountText) == ["3.33", "6.67"])  // 10 and 20 of 30 days
        #expect(invoice.total.amountText == "10.00")
        // In May the assignment has ended: the default plan again, one segment, the whole fee.
        let may = try e.invoice(tenant: "acme", period: april.next, usage: [:])
        #expect(may.segments.map(\.planID) == ["a"])
        #expect(may.total.amountText == "10.00")
    }

    @Test("late usage from an earlier period: adjustment lines priced by that period's plan")
    func adjustment() throws {
        let e = try engine(
            plans: Self.changePlans, defaultPlan: "a",
            assignments: """
                  - tenant: acme
                    plan: b
                    from: 2026-04-01T00:00:00Z
                """)
        let marchSegment = try #require(try e.segments(tenant: "acme", period: march).first)
        let aprilSegment = try #require(try e.segments(tenant: "acme", period: april).first)
        #expect(marchSegment.planID == "a")
        let adjustment = try UsageAdjustment.addingLate(
            originalPeriod: march,
            billed: [SegmentUsage(segment: marchSegment, quantities: [UsageKey(metric: "api_calls"): q("120000")])],
            late: [SegmentUsage(segment: marchSegment, quantities: [UsageKey(metric: "api_calls"): q("1000")])])
        let invoice = try e.invoice(
            tenant: "acme", period: april,
            usage: [SegmentUsage(segment: aprilSegment, quantities: [UsageKey(metric: "api_calls"): q("250000")])],
            adjustments: [adjustment])
        let late = try #require(invoice.lines.first { $0.adjusts == march })
        #expect(late.description == "api_calls (adjustment for 2026-03)")
        #expect(late.planID == "a")
        #expect(late.quantity == q("1000"))
        #expect(late.amount.amountText == "1.00")  // plan a's $0.001, not plan b's $0.0005
        #expect(invoice.lines.filter { $0.adjusts != nil }.count == 1)
        // April: 200,000 billable × 0.0005 = 100.00, meets the minimum; fee 60.00; adjustment 1.00.
        #expect(invoice.total.amountText == "161.00")
    }

    @Test("original invoice plus adjustment equals the on-time invoice, to the cent")
    func adjustmentReconciles() throws {
        let e = try engine(plans: Self.minimumPlan)
        for (billed, late) in [("100", "7"), ("499995", "10"), ("2505", "10"), ("0", "1")] {
            let segment = try #require(try e.segments(tenant: "t", period: march).first)
            let adjustment = try UsageAdjustment.addingLate(
                originalPeriod: march,
                billed: [SegmentUsage(segment: segment, quantities: [UsageKey(metric: "api_calls"): q(billed)])],
                late: [SegmentUsage(segment: segment, quantities: [UsageKey(metric: "api_calls"): q(late)])])
            let original = try e.invoice(tenant: "t", period: march, usage: [UsageKey(metric: "api_calls"): q(billed)])
            let onTime = try e.invoice(tenant: "t", period: march, usage: [UsageKey(metric: "api_calls"): try q(billed).adding(q(late))])
            var sum = original.total
            for line in try e.adjustmentLines(tenant: "t", adjustment: adjustment) { sum = try sum.adding(line.amount) }
            #expect(sum == onTime.total, "billed \(billed), late \(late)")
        }
    }

    @Test("quantities near the top of the range give a clear overflow error, never a wrap")
    func overflow() throws {
        let e = try engine(plans: Self.seedPlan)
        let huge = Quantity(nanos: Int128.max / 2)
        let error = pricingError { _ = try e.invoice(tenant: "t", period: april, usage: [UsageKey(metric: "api_calls"): huge]) }
        guard case .overflow(let context, _) = error else {
            Issue.record("expected an overflow, got \(String(describing: error))")
            return
        }
        #expect(context == "api_calls")
        #expect(error?.description.contains("out of range") == true)
        // Cumulative usage across a plan change that overflows is also an error.
        let change = try engine(
            plans: Self.changePlans, defaultPlan: "a",
            assignments: """
                  - tenant: acme
                    plan: b
                    from: 2026-04-16T00:00:00Z
                """)
        let segments = try change.segments(tenant: "acme", period: april)
        let usage = segments.map { SegmentUsage(segment: $0, quantities: [UsageKey(metric: "api_calls"): Quantity(nanos: Int128.max - 1)]) }
        #expect(pricingError { _ = try change.invoice(tenant: "acme", period: april, usage: usage) } != nil)
        // Large but in range: 10^15 calls at $0.001 is exact.
        let big = try e.invoice(tenant: "t", period: april, usage: [UsageKey(metric: "api_calls"): q("1000000000000000")])
        #expect(big.total.amountText == "999999999950.00")
    }

    @Test("no plan and no default plan is an error naming the tenant")
    func noPlan() throws {
        let yaml = testMetrics + "plans:\n" + Self.seedPlan + "\n"
        let e = PricingEngine(config: try PricingConfigLoader.load(yaml: yaml))
        #expect(pricingError { _ = try e.invoice(tenant: "ghost", period: april, usage: [:]) } == .noPlan(tenant: "ghost", at: april.start))
    }
}
