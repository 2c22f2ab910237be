import Testing
import TallyCore
@testable import TallyPricing

/// Issue 15, item 4: the `min` and `avg` aggregations and the `percentage` model, from the file
/// to the invoice line, to the minor unit.
@Suite("Percentage prices, min and avg")
struct PercentageAndMeanTests {
    static let percentagePlan = """
          - id: p
            currency: USD
            charges:
              - metric: api_calls
                model: percentage
                percent: "2.9"
                fixed_fee: "0.30"
                minimum_per_event: "0.50"
                maximum_per_event: "10.00"
        """

    @Test("the file: min, avg and percentage are read exactly")
    func loads() throws {
        let config = try PricingConfigLoader.load(
            yaml: """
                metrics:
                  - name: low
                    aggregation: min
                  - name: mean
                    aggregation: avg
                  - name: api_calls
                    aggregation: sum
                plans:
                \(Self.percentagePlan)
                """)
        #expect(config.metric(named: "low")?.aggregation == .min && config.metric(named: "mean")?.aggregation == .average)
        #expect(config.metric(named: "mean")?.aggregation.isAdditive == false && config.metric(named: "mean")?.aggregation.description == "avg")
        let price = try #require(config.plan(id: "p")?.usageCharge(for: "api_calls")?.prices.first)
        guard case .percentage(let percentage) = price.model else {
            Issue.record("not a percentage: \(price.model)")
            return
        }
        #expect(percentage.rate.description == "0.029" && percentage.fixedFee.description == "0.3")
        #expect(percentage.minimum?.description == "0.5" && percentage.maximum?.description == "10")
        // The band: q × 0.029 against 0.50 − 0.30 and 10.00 − 0.30, at 10⁻²¹.
        #expect(
            percentage.clampBand
                == QuantityBand(multiplier: 29_000_000_000, lower: 200 * 1_000_000_000_000_000_000, upper: 9_700 * 1_000_000_000_000_000_000))
        // A percentage with 10 decimal places is a rate with 12, exactly.
        let fine = try PricingConfigLoader.load(
            yaml: testMetrics
                + "plans:\n  - id: p\n    currency: USD\n    charges:\n      - metric: api_calls\n        model: percentage\n        percent: \"0.0000000001\"\n"
        )
        guard case .percentage(let tiny) = fine.plan(id: "p")?.usageCharges.first?.prices.first?.model else {
            Issue.record("not a percentage")
            return
        }
        #expect(tiny.rate.picos == 1 && tiny.fixedFee.picos == 0 && !tiny.clamps && tiny.clampBand == nil)
    }

    static let invalid: [(String, String, String)] = [
        (
            "plans:\n  - id: p\n    currency: USD\n    charges:\n      - metric: seats\n        model: percentage\n        percent: 1\n",
            "plans[0].charges[0].model", "must aggregate by sum, not max"
        ),
        (
            "plans:\n  - id: p\n    currency: USD\n    charges:\n      - metric: api_calls\n        model: percentage\n        percent: 1\n        free: 10\n",
            "plans[0].charges[0].free", "does not apply to model percentage"
        ),
        (
            "plans:\n  - id: p\n    currency: USD\n    charges:\n      - metric: api_calls\n        model: percentage\n        percent: \"0.00000000001\"\n",
            "plans[0].charges[0].percent", "more than 10 decimal places"
        ),
        (
            "plans:\n  - id: p\n    currency: USD\n    charges:\n      - metric: api_calls\n        model: percentage\n        percent: \"-1\"\n",
            "plans[0].charges[0].percent", "must not be negative"
        ),
        (
            "plans:\n  - id: p\n    currency: USD\n    charges:\n      - metric: api_calls\n        model: percentage\n        percent: 1\n        minimum_per_event: 2\n        maximum_per_event: 1\n",
            "plans[0].charges[0].maximum_per_event", "must not be below minimum_per_event"
        ),
        (
            "plans:\n  - id: p\n    currency: USD\n    charges:\n      - metric: api_calls\n        model: per_unit\n        unit_price: 1\n        percent: 1\n",
            "plans[0].charges[0].percent", "does not apply to model per_unit"
        ),
        (
            "plans:\n  - id: p\n    currency: USD\n    charges:\n      - metric: api_calls\n        model: percentage\n        fixed_fee: 1\n",
            "plans[0].charges[0].percent", "required"
        ),
        (
            "plans:\n  - id: p\n    currency: USD\n    charges:\n      - metric: api_calls\n        price_by: region\n        prices:\n          - model: percentage\n            percent: 1\n            maximum_per_event: 5\n",
            "plans[0].charges[0].prices[0].model", "cannot be priced by 'region'"
        ),
    ]

    @Test("bad percentage prices are refused with the place and the reason", arguments: invalid)
    func refused(_ yaml: String, _ place: String, _ problem: String) {
        let issues = configIssues(testMetrics + yaml)
        #expect(issues.contains { $0.place == place && $0.problem.contains(problem) }, "got: \(issues.map(\.description))")
    }

    @Test("a clamped percentage of a filtered metric is refused")
    func refusedWithFilters() {
        let issues = configIssues(
            """
            metrics:
              - name: payments
                aggregation: sum
                filters:
                  - property: status
                    in: [ok]
            plans:
              - id: p
                currency: USD
                charges:
                  - metric: payments
                    model: percentage
                    percent: 1
                    minimum_per_event: 1
            """)
        #expect(issues.contains { $0.place == "plans[0].charges[0].model" && $0.problem.contains("has filters") }, "got: \(issues)")
    }

    /// Each event on its own, as a reference: q × 2.9 % + 0.30, at least 0.50, at most 10.00, in
    /// 10⁻²¹ USD, with no aggregate involved.
    static func referenceAmount(_ quantity: Quantity) -> Int128 {
        let amount = quantity.nanos * 29_000_000_000 + 300_000_000_000_000_000_000
        return min(max(amount, 500_000_000_000_000_000_000), 10_000_000_000_000_000_000_000)
    }

    @Test("percentage: the line is the sum of every event's clamped amount, rounded once")
    func percentageLine() throws {
        let quantities = ["0.01", "5", "12.34", "99.99", "250", "344.83", "344.82", "1000", "0.000000001", "17.2413793"].map(q)
        var basis = PercentageBasis()
        var exact: Int128 = 0
        var total = Quantity.zero
        for quantity in quantities {
            exact += Self.referenceAmount(quantity)
            total = try total.adding(quantity)
            // The band, as the ledger decides it (QuantityBand), gives the basis.
            let band = QuantityBand(multiplier: 29_000_000_000, lower: 200_000_000_000_000_000_000, upper: 9_700_000_000_000_000_000_000)
            switch band.value(of: quantity) {
            case QuantityBand.below: basis.eventsAtMinimum += 1
            case QuantityBand.above: basis.eventsAtMaximum += 1
            default:
                basis.chargedEvents += 1
                basis.chargedQuantity = try basis.chargedQuantity.adding(quantity)
            }
        }
        #expect(basis.eventsAtMinimum == 3 && basis.eventsAtMaximum == 3 && basis.chargedEvents == 4)
        let segment = try #require(try engine(plans: Self.percentagePlan).segments(tenant: "t", period: april).first)
        let invoice = try engine(plans: Self.percentagePlan).invoice(
            tenant: "t", period: april,
            usage: [
                SegmentUsage(
                    segment: segment, quantities: [UsageKey(metric: "api_calls"): total], percentageBases: [UsageKey(metric: "api_calls"): basis])
            ])
        let line = try #require(invoice.line("api_calls"))
        #expect(line.exactAmount.scaledAmount == exact)
        let rounded = try Money(currency: .usd, scaledAmount: exact).roundedForInvoiceLine()
        #expect(line.amount == rounded && invoice.total == rounded)
        #expect(line.quantity == total && line.steps.count == 4)
        #expect(line.steps.map(\.unitPrice.description) == ["0.029", "0.3", "0.5", "10"])
        // By hand: 379.5713793 × 0.029 + 4 × 0.30 + 3 × 0.50 + 3 × 10.00 = 43.7075699997.
        #expect(line.exactAmount.amountText == "43.7075699997" && line.amount.description == "43.71 USD")
    }

    @Test("percentage without bounds is sum × rate + count × fee; no events, nothing")
    func unboundedPercentage() throws {
        let plan = """
              - id: p
                currency: EUR
                charges:
                  - metric: api_calls
                    model: percentage
                    percent: "1.5"
                    fixed_fee: "0.25"
            """
        let e = try engine(plans: plan)
        let segment = try #require(try e.segments(tenant: "t", period: april).first)
        let key = UsageKey(metric: "api_calls")
        let invoice = try e.invoice(
            tenant: "t", period: april,
            usage: [
                SegmentUsage(
                    segment: segment, quantities: [key: q("1234.56")],
                    percentageBases: [key: PercentageBasis(chargedQuantity: q("1234.56"), chargedEvents: 7)])
            ])
        // 1234.56 × 0.015 = 18.5184, + 7 × 0.25 = 20.2684 → 20.27
        #expect(invoice.line("api_calls")?.exactAmount.amountText == "20.2684" && invoice.total.description == "20.27 EUR")
        let empty = try e.invoice(tenant: "t", period: april, usage: [UsageKey(metric: "api_calls"): .zero])
        #expect(empty.total.description == "0.00 EUR")
        #expect(throws: PricingError.self) { try e.invoice(tenant: "t", period: april, usage: [key: q("5")]) }
    }

    @Test(
        "half-even means to 9 places",
        arguments: [
            ("10", 3, "3.333333333"), ("2", 3, "0.666666667"), ("0.000000001", 2, "0"), ("0.000000003", 2, "0.000000002"),
            ("-0.000000003", 2, "-0.000000002"), ("-2", 3, "-0.666666667"), ("7", 0, "0"), ("1", 1, "1"),
        ])
    func means(_ sum: String, _ count: Int64, _ mean: String) {
        #expect(q(sum).dividedRoundingHalfEven(by: count) == q(mean))
    }
}
