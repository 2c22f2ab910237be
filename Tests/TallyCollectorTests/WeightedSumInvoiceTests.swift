import Foundation
import Testing
import TallyCore
import TallyLedger
import TallyPricing
import TallyTestSupport
@testable import TallyCollector

/// `weighted_sum` (issue 15, item 4) end to end on both backends: levels set in March carry into
/// April, a plan change at noon of April 15th splits one tenant's month (hours, days and a
/// monthly cell are read), and invoices priced from the aggregates equal the level integrals the
/// test computes from the raw events, rounded once. A late April event, sent after April closed,
/// becomes an adjustment line in May: the difference of April priced with and without it, with
/// April's tiers.
@Suite(.offThePool) struct WeightedSumInvoiceTests {
    static let yaml = """
        metrics:
          - name: storage
            aggregation: weighted_sum
            per: hour
            unit: GB
          - name: seats
            aggregation: weighted_sum
            per: day
        plans:
          - id: a
            currency: USD
            charges:
              - metric: storage
                model: per_unit
                unit_price: "0.0002"
              - metric: seats
                model: graduated
                tiers:
                  - up_to: "100"
                    unit_price: "0"
                  - unit_price: "0.5"
          - id: b
            currency: USD
            charges:
              - metric: storage
                model: per_unit
                unit_price: "0.0003"
              - metric: seats
                model: per_unit
                unit_price: "0.4"
        default_plan: a
        assignments:
          - tenant: acme
            plan: b
            from: 2026-04-15T12:00:00Z
        """

    /// The level integral over `[from, to)` in nano-units × µs: each event's quantity from its
    /// time until the next event's (by time, then fingerprint), zero before the first.
    static func integral(_ events: [UsageEvent], from: EventTime, to: EventTime) -> Int128 {
        let sorted = events.sorted { ($0.timestamp, Fingerprint(of: $0)) < ($1.timestamp, Fingerprint(of: $1)) }
        var total: Int128 = 0
        for (index, event) in sorted.enumerated() {
            let start = max(event.timestamp.microseconds, from.microseconds)
            let end = min(index + 1 < sorted.count ? sorted[index + 1].timestamp.microseconds : to.microseconds, to.microseconds)
            if start < end { total += event.quantity.nanos * Int128(end - start) }
        }
        return total
    }

    /// `value / divisor` to the nearest integer, a tie to the even one (the test's own rounding).
    static func halfEven(_ value: Int128, _ divisor: Int128) -> Int128 {
        let low = value >= 0 ? value / divisor : (value - divisor + 1) / divisor
        let below = value - low * divisor
        let above = (low + 1) * divisor - value
        return below < above || (below == above && low % 2 == 0) ? low : low + 1
    }

    /// The usage of `metric` in `[from, to)`: level × hours for storage, × days for seats.
    static func usage(_ events: [UsageEvent], _ metric: String, from: EventTime, to: EventTime) -> Quantity {
        let per: Int128 = metric == "storage" ? 3_600_000_000 : 86_400_000_000
        return Quantity(nanos: halfEven(integral(events.filter { $0.metric == metric }, from: from, to: to), per))
    }

    /// One line's exact amount (10⁻²¹ USD) for a quantity, by the plan's terms.
    static func amount(_ metric: String, plan: String, _ quantity: Quantity) -> Int128 {
        switch (metric, plan) {
        case ("storage", "a"): return quantity.nanos * 200_000_000
        case ("storage", _): return quantity.nanos * 300_000_000
        case ("seats", "a"): return max(quantity.nanos - 100_000_000_000, 0) * 500_000_000_000
        default: return quantity.nanos * 400_000_000_000
        }
    }

    static func events(tenant: String, seed: UInt64, from: EventTime, to: EventTime, count: Int) -> [UsageEvent] {
        var random = SplitMix64(seed: seed)
        return (0..<count).map { index in
            let metric = index % 2 == 0 ? "storage" : "seats"
            let nanos = Int128(random.next() % (metric == "storage" ? 900_000_000_000 : 12_000_000_000))
            let time = from.microseconds + Int64(random.next() % UInt64(to.microseconds - from.microseconds))
            return UsageEvent(
                tenant: tenant, metric: metric, quantity: Quantity(nanos: nanos), timestamp: EventTime(microseconds: time),
                id: "\(tenant)-\(seed)-\(index)", properties: Properties([]))
        }
    }

    func commit(_ events: [UsageEvent], sequence: inout UInt64, received: String, to store: any LedgerStore) throws {
        for start in stride(from: 0, to: events.count, by: 50) {
            sequence += 1
            let slice = Array(events[start..<min(start + 50, events.count)])
            let outcome = try store.commit(
                IncomingBatch(agent: "agent-1", sequence: sequence, receivedAt: try EventTime(parsing: received), events: slice.map { .valid($0) }))
            #expect(outcome.accepted + outcome.adjusted == slice.count, "\(outcome)")
        }
    }

    @Test(arguments: ["sqlite", "postgres"])
    func levelInvoicesEqualTheIntegralsOfTheRawEvents(_ backend: String) throws {
        let config = try PricingConfigLoader.load(yaml: Self.yaml)
        let pricing = AggregatePricing(config: config)
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tally-levels-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let address: String
        if backend == "postgres" {
            guard let server = try PostgresTestServer.shared() else { return }
            address = try server.createDatabase("levels")
        } else {
            address = "sqlite:\(directory.path)/ledger.db"
        }
        let store = try LedgerStores.open(address, configuration: AggregatePricing.ledgerConfiguration(for: config))
        defer { store.close() }
        let march = try EventTime(parsing: "2026-03-20T00:00:00Z")
        let april = try #require(BillingPeriod("2026-04"))
        let may = try #require(BillingPeriod("2026-05"))
        var sequence: UInt64 = 0
        // March's levels (on time), then April's, shuffled, received on May 2nd (on time).
        var events =
            Self.events(tenant: "acme", seed: 1, from: march, to: april.start, count: 20)
            + Self.events(tenant: "globex", seed: 2, from: march, to: april.start, count: 10)
        try commit(events, sequence: &sequence, received: "2026-03-31T23:00:00Z", to: store)
        var random = SplitMix64(seed: 3)
        let aprilEvents =
            (Self.events(tenant: "acme", seed: 4, from: april.start, to: april.end, count: 400)
            + Self.events(tenant: "globex", seed: 5, from: april.start, to: april.end, count: 150)).shuffled(using: &random)
        try commit(aprilEvents, sequence: &sequence, received: "2026-05-02T01:00:00Z", to: store)
        events += aprilEvents

        var billedApril: [String: Invoice] = [:]
        for tenant in ["acme", "globex"] {
            let invoice = try pricing.invoice(store: store, tenant: tenant, period: april)
            let mine = events.filter { $0.tenant == tenant }
            var expectedTotal = Money.zero(.usd)
            for segment in invoice.segments {
                for metric in ["storage", "seats"] {
                    let quantity = Self.usage(mine, metric, from: segment.start, to: segment.end)
                    let line = try #require(invoice.lines.first { $0.metric == metric && $0.segment == segment })
                    #expect(line.quantity == quantity, "\(tenant) \(metric) \(segment)")
                    let exact = Money(currency: .usd, scaledAmount: Self.amount(metric, plan: segment.planID, quantity))
                    #expect(line.exactAmount == exact, "\(tenant) \(metric) \(segment)")
                    expectedTotal = try expectedTotal.adding(try exact.roundedForInvoiceLine())
                }
            }
            #expect(invoice.segments.count == (tenant == "acme" ? 2 : 1))
            #expect(invoice.total == expectedTotal && invoice.total > .zero(.usd))
            // The bulk read prices the same invoice, and shows the month's integral.
            let bulk = try #require(try store.periodUsage(pricing.periodUsageQuery(period: april)).first { $0.tenant == tenant })
            #expect(try pricing.invoice(bulk, store: store) == invoice)
            let storage = try #require(config.metric(named: "storage"))
            #expect(try pricing.quantity(of: storage, in: bulk, store: store) == Self.usage(mine, "storage", from: april.start, to: april.end))
            billedApril[tenant] = invoice
        }

        // April closes (May 4th); a late April storage level arrives on May 5th: billed in May.
        let late = UsageEvent(
            tenant: "globex", metric: "storage", quantity: Quantity(5_000), timestamp: try EventTime(parsing: "2026-04-20T08:30:00Z"),
            id: "late", properties: Properties([]))
        try commit([late], sequence: &sequence, received: "2026-05-05T00:00:00Z", to: store)
        let mayInvoice = try pricing.invoice(store: store, tenant: "globex", period: may)
        let globex = events.filter { $0.tenant == "globex" }
        let before = Self.usage(globex, "storage", from: april.start, to: april.end)
        let after = Self.usage(globex + [late], "storage", from: april.start, to: april.end)
        #expect(before != after)
        let adjustment = try #require(mayInvoice.lines.first { $0.adjusts == april && $0.metric == "storage" })
        // The difference of the two lines as invoiced (each rounded to the cent).
        let corrected = try Money(currency: .usd, scaledAmount: Self.amount("storage", plan: "a", after)).roundedForInvoiceLine()
        let billed = try Money(currency: .usd, scaledAmount: Self.amount("storage", plan: "a", before)).roundedForInvoiceLine()
        #expect(adjustment.amount == (try corrected.subtracting(billed)))
        #expect(adjustment.amount > .zero(.usd))
        // May's own line: the level April ended with (the late event changed nothing after its
        // successor) held through May; globex sent nothing in May.
        let mayLine = try #require(mayInvoice.lines.first { $0.metric == "storage" && $0.adjusts == nil })
        #expect(mayLine.quantity == Self.usage(globex + [late], "storage", from: may.start, to: may.end))
        #expect(mayLine.quantity > .zero)
        // April's own invoice stays as billed: the late event is May's to bill.
        let aprilAgain = try pricing.invoice(store: store, tenant: "globex", period: april)
        #expect(aprilAgain.lines.first { $0.metric == "storage" }?.quantity == before)
        #expect(aprilAgain == billedApril["globex"])
        // May closes too (June 4th); a level set late on April 30th, with no later event, arrives
        // on June 4th: it changes April's last hour and the whole of May, both billed in June.
        let later = UsageEvent(
            tenant: "globex", metric: "storage", quantity: Quantity(9_000), timestamp: try EventTime(parsing: "2026-04-30T23:00:00Z"),
            id: "later", properties: Properties([]))
        try commit([later], sequence: &sequence, received: "2026-06-04T01:00:00Z", to: store)
        let june = try pricing.invoice(store: store, tenant: "globex", period: try #require(BillingPeriod("2026-06")))
        for (original, billedEvents) in [(april, globex + [late]), (may, globex + [late])] {
            let wasBilled = Self.usage(billedEvents, "storage", from: original.start, to: original.end)
            let isNow = Self.usage(billedEvents + [later], "storage", from: original.start, to: original.end)
            let difference = try Money(currency: .usd, scaledAmount: Self.amount("storage", plan: "a", isNow)).roundedForInvoiceLine()
                .subtracting(try Money(currency: .usd, scaledAmount: Self.amount("storage", plan: "a", wasBilled)).roundedForInvoiceLine())
            let line = try #require(june.lines.first { $0.adjusts == original && $0.metric == "storage" }, "\(original): \(june.lines)")
            let quantity = try isNow.subtracting(wasBilled)
            #expect(line.amount == difference && line.quantity == quantity, "\(original)")
        }
        let juneOwn = try #require(june.lines.first { $0.metric == "storage" && $0.adjusts == nil })
        #expect(juneOwn.quantity == Quantity(9_000 * 24 * 30))
        for month in ["2026-03", "2026-04", "2026-05", "2026-06"] {
            let drift = try store.recomputeAggregates(tenant: nil, period: try #require(BillingPeriod(month)))
            #expect(drift.differences.isEmpty, "\(month): \(drift.differences.prefix(2))")
        }
        if backend == "postgres", let server = try PostgresTestServer.shared(), let name = PostgresTestServer.databaseName(in: address) {
            server.dropDatabase(name)
        }
    }

    /// The examples of PRICING.md, by hand: 10 GB from midnight and 4 GB from 06:30 is 135
    /// GB-hours that day; 20 seats set in March and nothing sent in April are 600 seat-days of
    /// April; a day with no level yet is 0.
    @Test func theDocumentedExamples() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tally-levels-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let config = try PricingConfigLoader.load(yaml: Self.yaml)
        let store = try LedgerStores.open("sqlite:\(directory.path)/ledger.db", configuration: AggregatePricing.ledgerConfiguration(for: config))
        defer { store.close() }
        func level(_ metric: String, _ quantity: Int64, _ time: String) throws -> UsageEvent {
            UsageEvent(
                tenant: "acme", metric: metric, quantity: Quantity(quantity), timestamp: try EventTime(parsing: time), id: "\(metric)-\(time)",
                properties: Properties([]))
        }
        var sequence: UInt64 = 0
        try commit([try level("seats", 20, "2026-03-30T15:00:00Z")], sequence: &sequence, received: "2026-03-31T00:00:00Z", to: store)
        try commit(
            [try level("storage", 4, "2026-04-13T06:30:00Z"), try level("storage", 10, "2026-04-13T00:00:00Z")], sequence: &sequence,
            received: "2026-04-20T00:00:00Z", to: store)
        func hours(_ from: String, _ to: String) throws -> Range<Int64> {
            try EventTime(parsing: from).hourSinceEpoch..<EventTime(parsing: to).hourSinceEpoch
        }
        let day = try AggregatePricing.levelQuantity(
            store: store, tenant: "acme", metric: "storage", per: .hour, hours: try hours("2026-04-13T00:00:00Z", "2026-04-14T00:00:00Z"),
            billing: .billedThrough(.last))
        #expect(day == Quantity(135))
        let dayBefore = try AggregatePricing.levelQuantity(
            store: store, tenant: "acme", metric: "storage", per: .hour, hours: try hours("2026-04-12T00:00:00Z", "2026-04-13T00:00:00Z"),
            billing: .billedThrough(.last))
        #expect(dayBefore == .zero)
        let seats = try AggregatePricing.levelQuantity(
            store: store, tenant: "acme", metric: "seats", per: .day, hours: try hours("2026-04-01T00:00:00Z", "2026-05-01T00:00:00Z"),
            billing: .billedThrough(.last))
        #expect(seats == Quantity(600))
    }

    /// The file says what is wrong with a weighted_sum: a time unit it does not know, a group or
    /// a filter (one level per tenant and metric), `per` on another aggregation.
    @Test func theLoaderRefusesWhatALevelCannotBe() throws {
        let metric = try #require(try PricingConfigLoader.load(yaml: Self.yaml).metric(named: "seats"))
        #expect(metric.aggregation == .weightedSum(per: .day))
        let cases: [(String, String)] = [
            ("aggregation: weighted_sum\n    per: week", "unknown time unit 'week'"),
            ("aggregation: weighted_sum\n    group_by: [region]", "does not apply to aggregation weighted_sum"),
            ("aggregation: weighted_sum\n    filters:\n      - property: region\n        in: [eu]", "does not apply to aggregation weighted_sum"),
            ("aggregation: sum\n    per: hour", "applies only to aggregation weighted_sum"),
        ]
        for (fields, message) in cases {
            let yaml = """
                metrics:
                  - name: seats
                    \(fields)
                plans:
                  - id: a
                    currency: USD
                    charges:
                      - metric: seats
                        model: per_unit
                        unit_price: "1"
                default_plan: a
                """
            #expect {
                try PricingConfigLoader.load(yaml: yaml)
            } throws: { error in
                "\(error)".contains(message)
            }
        }
    }
}
