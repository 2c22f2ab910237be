import Foundation
import TallyCore
@testable import TallyLedger
import TallyTestSupport
import Testing

/// Minimums, means and quantity bands (issue 15) on every backend: the hourly, daily and monthly
/// cells answer exactly what a plain reference over the distinct raw events says, and the audit
/// recomputes them with no drift.
@Suite(.offThePool) struct LedgerContractMinAvgBandTests {
    /// 2.9 % + 0.30 per event, at least 0.50 and at most 100.00 (Money scale 10⁻²¹): an event is
    /// below when q × 0.029 < 0.20 and above when q × 0.029 > 99.70.
    static let band = QuantityBand(
        multiplier: 29_000_000_000, lower: 200_000_000_000_000_000_000, upper: 99_700_000_000_000_000_000_000)

    static let configuration = LedgerConfiguration(groupBy: ["endpoint", band.dimension])

    /// The band of one event, decided by the test from the price itself: q × rate + fee
    /// against the minimum and the maximum, in 10⁻²¹.
    static func referenceBand(_ quantity: Quantity) -> String {
        let amount = quantity.nanos * 29_000_000_000 + 300_000_000_000_000_000_000
        if amount < 500_000_000_000_000_000_000 { return "below" }
        if amount > 100_000_000_000_000_000_000_000 { return "above" }
        return "within"
    }

    /// Whether `mean` is sum / count to 9 places, half-even: |sum − mean × count| is at most half
    /// a nano-unit's worth, and exactly half only with an even last digit.
    static func isHalfEvenMean(_ mean: Quantity, sum: Quantity, count: Int64) -> Bool {
        let error = (sum.nanos - mean.nanos * Int128(count)).magnitude * 2
        let limit = UInt128(count)
        return error < limit || (error == limit && mean.nanos % 2 == 0)
    }

    struct Expected {
        var sum = Quantity.zero
        var count: Int64 = 0
        var max: Quantity?
        var min: Quantity?

        mutating func add(_ quantity: Quantity) throws {
            sum = try sum.adding(quantity)
            count += 1
            max = Swift.max(max ?? quantity, quantity)
            min = Swift.min(min ?? quantity, quantity)
        }
    }

    /// Events of 40 days from April 3rd into May, fractional quantities, retries; committed in
    /// batches that arrive on time.
    func committed(_ factory: any LedgerStoreFactory) throws -> (TestLedger, [UsageEvent]) {
        let ledger = try TestLedger(factory, configuration: Self.configuration)
        var events = workload(count: 2_400, seed: 21, start: at("2026-04-03T00:00:00Z"), spanHours: 24 * 40, tenants: 3)
        // Quantities from 0.000000001 to 5000: both bounds of the band are crossed.
        events.append(event("tenant-0", "api_calls", quantity: "0.000000001", at: "2026-04-05T10:00:00Z", id: "tiny"))
        for (index, chunk) in stride(from: 0, to: events.count, by: 200).enumerated() {
            let slice = Array(events[chunk..<min(chunk + 200, events.count)])
            let last = slice.map(\.timestamp).max() ?? at("2026-04-03T00:00:00Z")
            let now = EventTime(microseconds: last.microseconds + 60_000_000)
            let outcome = try ledger.store.commit(
                IncomingBatch(agent: "agent-1", sequence: UInt64(index + 1), receivedAt: now, events: slice.map { .valid($0) }))
            #expect(outcome.late == 0 && outcome.rejections.isEmpty)
        }
        var seen: Set<Fingerprint> = []
        return (ledger, events.filter { seen.insert(Fingerprint(of: $0)).inserted })
    }

    @Test(arguments: ledgerFactories)
    func minimumsMeansAndBandsMatchTheRawEventsAtEveryGrain(_ factory: any LedgerStoreFactory) throws {
        let (ledger, events) = try committed(factory)
        let from = at("2026-04-01T00:00:00Z")
        let to = at("2026-06-01T00:00:00Z")
        var checked = 0
        for tenant in Set(events.map(\.tenant)).sorted() {
            for metric in Set(events.map(\.metric)).sorted() {
                let mine = events.filter { $0.tenant == tenant && $0.metric == metric }
                for granularity in UsageQuery.Granularity.allCases {
                    let query = UsageQuery(tenant: tenant, metric: metric, from: from, to: to, granularity: granularity)
                    var expected: [EventTime: Expected] = [:]
                    for event in mine { try expected[query.bucketStart(of: event.timestamp), default: Expected()].add(event.quantity) }
                    let buckets = try ledger.store.usage(query)
                    #expect(buckets.count == expected.count, "\(tenant) \(metric) \(granularity)")
                    for bucket in buckets {
                        let want = try #require(expected[bucket.start])
                        let got = bucket.aggregate
                        #expect(got.sum == want.sum && got.count == want.count && got.max == want.max && got.min == want.min)
                        #expect(Self.isHalfEvenMean(got.average, sum: want.sum, count: want.count), "\(got.average) of \(want.sum) / \(want.count)")
                        checked += 1
                    }
                }
                // The band cells of the whole range, from the monthly rollup.
                let query = UsageQuery(tenant: tenant, metric: metric, from: from, to: to, granularity: .month, groupBy: Self.band.dimension)
                var expected: [String: Expected] = [:]
                for event in mine { try expected[Self.referenceBand(event.quantity), default: Expected()].add(event.quantity) }
                var got: [String: UsageAggregate] = [:]
                for bucket in try ledger.store.usage(query) {
                    let value = try #require(bucket.group)
                    if var existing = got[value] {
                        try existing.merge(bucket.aggregate)
                        got[value] = existing
                    } else {
                        got[value] = bucket.aggregate
                    }
                }
                #expect(Set(got.keys) == Set(expected.keys))
                for (value, want) in expected {
                    #expect(got[value]?.count == want.count && got[value]?.sum == want.sum && got[value]?.min == want.min, "\(value)")
                }
            }
        }
        #expect(checked > 100)
        // Every band occurs in this workload, so each comparison above could have failed.
        #expect(Set(events.map { Self.referenceBand($0.quantity) }) == ["below", "within", "above"])
        for month in ["2026-04", "2026-05"] {
            let drift = try ledger.store.recomputeAggregates(tenant: nil, period: period(month))
            #expect(drift.differences.isEmpty, "\(drift.differences.prefix(3))")
            #expect(drift.cellsCompared > 0)
        }
    }

    @Test func theAuditFindsAWrongMinimum() throws {
        let (ledger, _) = try committed(SQLiteFactory())
        let store = try #require(ledger.store as? SQLiteLedgerStore)
        try store.flushAggregates()
        try store.database.execute(
            "UPDATE usage_daily SET min = '0' WHERE tenant = 'tenant-1' AND metric = 'api_calls' AND dimension = '' AND hour = \(at("2026-04-10T00:00:00Z").hourSinceEpoch)"
        )
        let drift = try ledger.store.recomputeAggregates(tenant: "tenant-1", period: period("2026-04"))
        #expect(drift.differences.count == 1 && drift.differences.first?.grain == .day)
        #expect(drift.differences.first?.stored?.min == .zero && drift.differences.first?.recomputed?.min != .zero)
    }

    /// A schema-3 file (no `min` column, no levels) opens as the current schema (6): its cells have no minimum, which is
    /// not drift; a cell written after the upgrade alone has one; a cell of both keeps none.
    @Test func aSchemaThreeLedgerKeepsWorking() throws {
        let ledger = try TestLedger(SQLiteFactory())
        _ = try ledger.store.commit(
            batch(
                1,
                [
                    event(quantity: "4", at: "2026-04-13T10:10:00Z", id: "a"), event(quantity: "2.5", at: "2026-04-13T10:20:00Z", id: "b"),
                ]))
        let store = try #require(ledger.store as? SQLiteLedgerStore)
        try store.flushAggregates()
        for table in ["usage_hourly", "usage_daily", "usage_monthly"] {
            for column in ["min", "level_delta", "level_time"] { try store.database.execute("ALTER TABLE \(table) DROP COLUMN \(column)") }
        }
        try store.database.execute("DROP TABLE levels")
        try store.database.execute("UPDATE ledger_meta SET value = '3' WHERE key = 'schema_version'")
        try ledger.reopen()
        let reopened = try #require(ledger.store as? SQLiteLedgerStore)
        let version = try reopened.database.prepare("SELECT value FROM ledger_meta WHERE key = 'schema_version'")
        #expect(try version.step() && version.text(0) == SQLiteSchema.version && SQLiteSchema.version == "7")
        version.reset()
        let april = period("2026-04")
        #expect(try ledger.store.recomputeAggregates(tenant: "acme", period: april).differences.isEmpty)
        let old = try ledger.store.storedAggregates(tenant: "acme", period: april)
        #expect(!old.isEmpty && old.values.allSatisfy { $0.min == nil && $0.sum == (try? Quantity(parsing: "6.5")) })
        // New events: one in the old hour (its minimum stays unknown), one in a new hour.
        _ = try ledger.store.commit(
            batch(
                2,
                [
                    event(quantity: "1", at: "2026-04-13T10:30:00Z", id: "c"), event(quantity: "3", at: "2026-04-13T11:30:00Z", id: "d"),
                ]))
        try ledger.reopen()
        let hourly = try ledger.store.storedAggregates(tenant: "acme", period: april)
        let ten = hourly.first { $0.key.hour == at("2026-04-13T10:00:00Z").hourSinceEpoch && $0.key.dimension.isEmpty }
        let eleven = hourly.first { $0.key.hour == at("2026-04-13T11:00:00Z").hourSinceEpoch && $0.key.dimension.isEmpty }
        #expect(ten?.value.min == nil && ten?.value.count == 3)
        #expect(eleven?.value.min == Quantity(3))
        #expect(try ledger.store.recomputeAggregates(tenant: "acme", period: april).differences.isEmpty)
    }
}
