import Foundation
import Testing
import TallyCore
import TallyLedger
import TallyPricing
import TallyTestSupport
@testable import TallyCollector

/// Issue 15, item 4, end to end on both backends: events into a ledger configured by the pricing
/// file, invoices priced from its aggregates (a plan change at noon of April 15th makes one
/// tenant's segments read hours, days and whole days; the other tenant's month is one monthly
/// cell), against invoices computed by the test from the raw events alone.
@Suite(.offThePool) struct MinAvgPercentageInvoiceTests {
    static let yaml = """
        metrics:
          - name: payments
            aggregation: sum
          - name: latency
            aggregation: avg
          - name: headroom
            aggregation: min
        plans:
          - id: a
            currency: USD
            charges:
              - metric: payments
                model: percentage
                percent: "2.9"
                fixed_fee: "0.30"
                minimum_per_event: "0.50"
                maximum_per_event: "20.00"
              - metric: latency
                model: per_unit
                unit_price: "0.0123"
              - metric: headroom
                model: per_unit
                unit_price: "1.5"
          - id: b
            currency: USD
            charges:
              - metric: payments
                model: percentage
                percent: "1.25"
                fixed_fee: "0.10"
              - metric: latency
                model: per_unit
                unit_price: "0.02"
              - metric: headroom
                model: per_unit
                unit_price: "2"
        default_plan: a
        assignments:
          - tenant: acme
            plan: b
            from: 2026-04-15T12:00:00Z
        """

    /// Events of April and May 1st (which the invoice must leave out), quantities with up to 9
    /// decimal places.
    static func events() -> [UsageEvent] {
        var random = SplitMix64(seed: 77)
        let start = EventTime(microseconds: 1_775_001_600_000_000)  // 2026-04-01T00:00:00Z
        var events: [UsageEvent] = []
        for index in 0..<1_500 {
            let metric = ["payments", "latency", "headroom"][index % 3]
            let nanos = Int128(random.next() % 1_500_000_000_000) + 1  // up to 1500 units
            let time = EventTime(microseconds: start.microseconds + Int64(random.next() % (31 * 86_400_000_000)))
            events.append(
                UsageEvent(
                    tenant: index % 5 == 0 ? "globex" : "acme", metric: metric, quantity: Quantity(nanos: nanos), timestamp: time,
                    id: "e\(index)", properties: Properties([])))
        }
        return events
    }

    /// The mean the test expects: the nano-unit nearest sum / count, a tie to the even one.
    static func referenceMean(_ quantities: [Quantity]) -> Quantity {
        guard !quantities.isEmpty else { return .zero }
        let sum = quantities.reduce(Int128(0)) { $0 + $1.nanos }
        let count = Int128(quantities.count)
        let low = sum >= 0 ? sum / count : (sum - count + 1) / count
        let below = sum - low * count
        let above = (low + 1) * count - sum
        if below < above || (below == above && low % 2 == 0) { return Quantity(nanos: low) }
        return Quantity(nanos: low + 1)
    }

    /// One line's exact amount (10⁻²¹ USD) from the events of its segment, by the plan's terms.
    static func referenceAmount(metric: String, plan: String, _ quantities: [Quantity]) -> Int128 {
        let pico: Int128 = 1_000_000_000_000
        switch (metric, plan) {
        case ("payments", "a"):
            return quantities.reduce(0) { total, quantity in
                let amount = quantity.nanos * 29_000_000_000 + 300_000_000_000 * 1_000_000_000
                return total + min(max(amount, 500_000_000_000 * 1_000_000_000), 20 * pico * 1_000_000_000)
            }
        case ("payments", _): return quantities.reduce(0) { $0 + $1.nanos * 12_500_000_000 + 100_000_000_000 * 1_000_000_000 }
        case ("latency", let plan): return referenceMean(quantities).nanos * (plan == "a" ? 12_300_000_000 : 20_000_000_000)
        default:
            guard let lowest = quantities.min() else { return 0 }
            return lowest.nanos * (plan == "a" ? 1_500_000_000_000 : 2 * pico)
        }
    }

    @Test(arguments: ["sqlite", "postgres"])
    func invoicesFromAggregatesEqualTheRawEventsPricedOneByOne(_ backend: String) throws {
        let config = try PricingConfigLoader.load(yaml: Self.yaml)
        let pricing = AggregatePricing(config: config)
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tally-aggs-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let address: String
        if backend == "postgres" {
            guard let server = try PostgresTestServer.shared() else { return }
            address = try server.createDatabase("aggs")
        } else {
            address = "sqlite:\(directory.path)/ledger.db"
        }
        let store = try LedgerStores.open(address, configuration: AggregatePricing.ledgerConfiguration(for: config))
        defer { store.close() }
        let events = Self.events()
        for (index, start) in stride(from: 0, to: events.count, by: 300).enumerated() {
            let slice = Array(events[start..<min(start + 300, events.count)])
            // Received on May 2nd, 01:00: every April event is on time (the grace window), none late.
            let outcome = try store.commit(
                IncomingBatch(
                    agent: "agent-1", sequence: UInt64(index + 1), receivedAt: EventTime(microseconds: 1_777_683_600_000_000),
                    events: slice.map { .valid($0) }))
            #expect(outcome.accepted == slice.count)
        }
        let april = try #require(BillingPeriod("2026-04"))
        for tenant in ["acme", "globex"] {
            let invoice = try pricing.invoice(store: store, tenant: tenant, period: april)
            var expectedTotal = Money.zero(.usd)
            for segment in invoice.segments {
                for metric in ["payments", "latency", "headroom"] {
                    let quantities = events.filter {
                        $0.tenant == tenant && $0.metric == metric && $0.timestamp >= segment.start && $0.timestamp < segment.end
                    }.map(\.quantity)
                    let exact = Money(currency: .usd, scaledAmount: Self.referenceAmount(metric: metric, plan: segment.planID, quantities))
                    let line = try #require(invoice.lines.first { $0.metric == metric && $0.segment == segment })
                    #expect(line.exactAmount == exact, "\(tenant) \(metric) \(segment)")
                    let rounded = try exact.roundedForInvoiceLine()
                    #expect(line.amount == rounded)
                    expectedTotal = try expectedTotal.adding(rounded)
                    #expect(!quantities.isEmpty)
                }
            }
            #expect(invoice.segments.count == (tenant == "acme" ? 2 : 1))
            #expect(invoice.total == expectedTotal && invoice.total > .zero(.usd))
            // The bulk read of the period prices the same invoice (from its monthly cells).
            let bulk = try store.periodUsage(pricing.periodUsageQuery(period: april)).first { $0.tenant == tenant }
            #expect(try pricing.invoice(try #require(bulk), store: store) == invoice)
        }
        // Some payments of plan a were clamped each way: the band did real work.
        let clampedLow = events.contains { $0.metric == "payments" && $0.quantity < Quantity(7) }
        let clampedHigh = events.contains { $0.metric == "payments" && $0.quantity > Quantity(680) }
        #expect(clampedLow && clampedHigh)
        for month in ["2026-04", "2026-05"] {
            let drift = try store.recomputeAggregates(tenant: nil, period: try #require(BillingPeriod(month)))
            #expect(drift.differences.isEmpty, "\(month): \(drift.differences.prefix(2))")
        }
        if backend == "postgres", let server = try PostgresTestServer.shared(), let name = PostgresTestServer.databaseName(in: address) {
            server.dropDatabase(name)
        }
    }
}
