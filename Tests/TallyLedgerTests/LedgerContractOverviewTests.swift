import TallyCore
@testable import TallyLedger
import TallyTestSupport
import Testing

/// The admin overview's reads, on every backend: every tenant of a period at once
/// (`periodUsage`) and the agents from their batch records (`agentActivity`).
@Suite(.offThePool) struct LedgerContractOverviewTests {
    static let kinds = [
        MetricDimension(metric: "api_calls"), MetricDimension(metric: "api_calls", dimension: "endpoint"),
        MetricDimension(metric: "active_users"),
    ]
    static let users = UniqueCountKey(metric: "active_users", property: "user")

    /// March: six tenants (odd names included), one whose only event is refused in February, a
    /// March event of acme that arrives late and is billed in April, and one of `lateonly` whose
    /// only usage is such a late event.
    func overviewLedger(_ factory: any LedgerStoreFactory) throws -> TestLedger {
        let ledger = try TestLedger(factory)
        _ = try ledger.store.commit(
            batch(
                1, now: "2026-03-20T00:00:00Z",
                [
                    event(quantity: "2", at: "2026-03-10T01:15:00Z", id: "m1", [("endpoint", "/a")]),
                    event(quantity: "3", at: "2026-03-10T01:45:00Z", id: "m2", [("endpoint", "/b")]),
                    event("globex", quantity: "7", at: "2026-03-11T00:00:00Z", id: "g1"),
                    event("Zeta Corp", at: "2026-03-11T00:00:00Z", id: "z1"),
                    event("ACME-west", at: "2026-03-11T00:00:00Z", id: "w1"),
                    event("café", at: "2026-03-11T00:00:00Z", id: "c1"),
                    event("50%_off", at: "2026-03-11T00:00:00Z", id: "p1"),
                    event("acme", "active_users", at: "2026-03-12T00:00:00Z", id: "u1", [("user", "ann")]),
                    event("old-only", at: "2026-02-01T00:00:00Z", id: "o1"),  // more than 35 days old: refused, still seen
                ]))
        _ = try ledger.store.commit(
            batch(
                2, now: "2026-04-05T00:00:00Z",
                [
                    event(quantity: "5", at: "2026-03-30T12:00:00Z", id: "late"),  // March closed: adjusted into April
                    event("lateonly", quantity: "4", at: "2026-03-30T12:00:00Z", id: "l1"),
                    event(quantity: "11", at: "2026-04-04T10:00:00Z", id: "a1", [("endpoint", "/a")]),
                    event("beta", at: "2026-04-04T10:00:00Z", id: "b1"),
                    event("acme", "active_users", at: "2026-04-01T00:00:00Z", id: "u3", [("user", "bob")]),
                ]))
        return ledger
    }

    func read(_ store: any LedgerStore, _ month: String, search: String? = nil) throws -> [TenantPeriodUsage] {
        try store.periodUsage(PeriodUsageQuery(period: period(month), cells: Self.kinds, uniqueCounts: [Self.users], search: search))
    }

    @Test(arguments: ledgerFactories)
    func periodUsageHasEveryTenantOfThePeriodWithItsCells(_ factory: any LedgerStoreFactory) throws {
        let ledger = try overviewLedger(factory)
        let store = ledger.store
        let march = try read(store, "2026-03")
        // Byte order; `lateonly` used March too, so it is there; nobody else.
        #expect(march.map(\.tenant) == ["50%_off", "ACME-west", "Zeta Corp", "acme", "café", "globex", "lateonly"])
        let acme = try #require(march.first { $0.tenant == "acme" })
        #expect(acme.period == period("2026-03") && !acme.hasAdjustments)
        // Own-period usage 2 + 3, and the late 5 billed in April, in separate cells.
        let totals = acme.cells.filter { $0.metric == "api_calls" && $0.dimension.isEmpty }
        #expect(totals.map(\.billedIn) == [nil, period("2026-04")])
        #expect(totals.map(\.aggregate.sum) == [Quantity(5), Quantity(5)])
        #expect(try acme.total(of: "api_calls")?.sum == Quantity(10) && acme.total(of: "api_calls")?.count == 3)
        let byEndpoint = acme.cells.filter { $0.dimension == "endpoint" }.map { "\($0.value)|\($0.billedIn?.description ?? "")|\($0.aggregate.sum)" }
        // Cells are ordered by value: the late event had no endpoint ("").
        #expect(byEndpoint == ["|2026-04|5", "/a||2", "/b||3"])
        #expect(acme.distinctValues[Self.users] == 1)
        #expect(try acme.total(of: "active_users")?.count == 1)
        #expect(march.first { $0.tenant == "globex" }?.cells.filter { $0.dimension.isEmpty }.map(\.aggregate.sum) == [Quantity(7)])

        // The refused event's tenant is in February's read, with nothing to bill.
        let february = try read(store, "2026-02")
        #expect(february.map(\.tenant) == ["old-only"] && february.first?.cells.isEmpty == true)

        // April: acme and beta used it; lateonly only has March usage billed in it.
        let april = try read(store, "2026-04")
        #expect(april.map(\.tenant) == ["acme", "beta", "lateonly"])
        #expect(april.map(\.hasAdjustments) == [true, false, true])
        #expect(april.first { $0.tenant == "lateonly" }?.cells.isEmpty == true)
        #expect(try april.first?.total(of: "api_calls")?.sum == Quantity(11))
        #expect(april.first?.distinctValues[Self.users] == 1)
        #expect(try read(store, "2026-05").isEmpty)
    }

    /// The search: part of the name, ASCII letters in any case, everything else exactly (`%` and
    /// `_` are plain characters; `É` is not `é`), the same on every backend and in `matches`.
    @Test(arguments: ledgerFactories)
    func periodUsageSearchesTenantNames(_ factory: any LedgerStoreFactory) throws {
        let ledger = try overviewLedger(factory)
        let all = try read(ledger.store, "2026-03").map(\.tenant)
        let cases: [(String?, [String])] = [
            (nil, all), ("", all), ("acme", ["ACME-west", "acme"]), ("ACME", ["ACME-west", "acme"]), ("aCmE-W", ["ACME-west"]),
            ("%", ["50%_off"]), ("_", ["50%_off"]), ("%_o", ["50%_off"]), ("e", ["ACME-west", "Zeta Corp", "acme", "globex", "lateonly"]),
            ("caf", ["café"]), ("é", ["café"]), ("CAFÉ", []), (" ", ["Zeta Corp"]), ("nobody", []),
        ]
        for (search, expected) in cases {
            let found = try read(ledger.store, "2026-03", search: search)
            #expect(found.map(\.tenant) == expected, "search \(String(describing: search))")
            let query = PeriodUsageQuery(period: period("2026-03"), cells: [], search: search)
            #expect(all.filter(query.matches) == expected, "matches(tenant:) for \(String(describing: search))")
        }
        // A search keeps each tenant's cells as they are without it.
        let acme = try read(ledger.store, "2026-03", search: "acme").last
        #expect(acme == (try read(ledger.store, "2026-03").first { $0.tenant == "acme" }))
    }

    /// A tenant's period read answers its billing reads exactly as the store does, and refuses
    /// what it did not read rather than answering zero.
    @Test(arguments: ledgerFactories)
    func aPeriodReadAnswersBillingReadsLikeTheStore(_ factory: any LedgerStoreFactory) throws {
        let ledger = try overviewLedger(factory)
        let store = ledger.store
        let acme = try #require(try read(store, "2026-03").first { $0.tenant == "acme" })
        let hours = period("2026-03").start.hourSinceEpoch..<period("2026-03").end.hourSinceEpoch
        for kind in Self.kinds {
            for billing in [
                BillingSelection.ownPeriod, .billedThrough(period("2026-04")), .adjustmentsIn(period("2026-04")), .billedBefore(period("2026-04")),
            ] {
                let mine = try acme.billableAggregates(tenant: "acme", metric: kind.metric, hours: hours, dimension: kind.dimension, billing: billing)
                let theirs = try store.billableAggregates(
                    tenant: "acme", metric: kind.metric, hours: hours, dimension: kind.dimension, billing: billing)
                #expect(mine == theirs, "\(kind) \(billing)")
            }
        }
        #expect(
            try acme.distinctValues(
                tenant: "acme", metric: "active_users", property: "user", period: period("2026-03"), billedThrough: period("2026-03"))
                == store.distinctValues(
                    tenant: "acme", metric: "active_users", property: "user", period: period("2026-03"), billedThrough: period("2026-03")))
        #expect(try acme.adjustedPeriods(tenant: "acme", billedIn: period("2026-03")).isEmpty)
        #expect(throws: LedgerError.self) {
            try acme.billableAggregates(tenant: "acme", metric: "bytes_out", hours: hours, dimension: "", billing: .ownPeriod)
        }
        #expect(throws: LedgerError.self) {
            try acme.billableAggregates(
                tenant: "acme", metric: "api_calls", hours: hours.lowerBound..<(hours.upperBound - 1), dimension: "", billing: .ownPeriod)
        }
        #expect(throws: LedgerError.self) {
            try acme.billableAggregates(tenant: "globex", metric: "api_calls", hours: hours, dimension: "", billing: .ownPeriod)
        }
        let april = try #require(try read(store, "2026-04").first { $0.tenant == "acme" })
        #expect(throws: LedgerError.self) { try april.adjustedPeriods(tenant: "acme", billedIn: period("2026-04")) }
    }

    /// Every tenant's monthly cells from one read equal each tenant's stored monthly cells, on a
    /// workload with late events billed in the next period.
    @Test(arguments: ledgerFactories)
    func periodUsageEqualsEachTenantsStoredCells(_ factory: any LedgerStoreFactory) throws {
        let ledger = try TestLedger(factory)
        // March 25th to April 4th, received on April 10th: March has closed, its events are late.
        let events = workload(count: 3000, seed: 5, start: at("2026-03-25T00:00:00Z"), spanHours: 240, tenants: 30)
        for (sequence, offset) in stride(from: 0, to: events.count, by: 500).enumerated() {
            _ = try ledger.store.commit(batch(UInt64(sequence + 1), now: "2026-04-10T00:00:00Z", Array(events[offset..<(offset + 500)])))
        }
        let metrics = ["api_calls", "bytes_out", "compute_ms", "exports"]
        let kinds = metrics.flatMap { [MetricDimension(metric: $0), MetricDimension(metric: $0, dimension: "endpoint")] }
        var adjustedSomewhere = false
        for month in ["2026-03", "2026-04"] {
            let answer = try ledger.store.periodUsage(PeriodUsageQuery(period: period(month), cells: kinds))
            #expect(answer.map(\.tenant) == (0..<30).map { "tenant-\($0)" }.sorted())
            for tenant in answer {
                let stored = try ledger.store.storedAggregates(tenant: tenant.tenant, period: period(month), grain: .month)
                let expected = stored.map {
                    PeriodUsageCell(
                        metric: $0.key.metric, dimension: $0.key.dimension, value: $0.key.value, billedIn: $0.key.billedIn, aggregate: $0.value)
                }.sorted()
                #expect(tenant.cells == expected, "\(tenant.tenant) \(month)")
                let adjusted = try !ledger.store.adjustedPeriods(tenant: tenant.tenant, billedIn: period(month)).isEmpty
                #expect(tenant.hasAdjustments == adjusted, "\(tenant.tenant) \(month)")
                adjustedSomewhere = adjustedSomewhere || adjusted
            }
        }
        #expect(adjustedSomewhere, "the workload must have late events")
    }

    /// Thousands of tenants in one read, and a search among them.
    @Test(arguments: ledgerFactories)
    func periodUsageReadsThousandsOfTenants(_ factory: any LedgerStoreFactory) throws {
        let ledger = try TestLedger(factory)
        for chunk in 0..<3 {
            let events = (0..<1000).map { index in
                event("tenant-\(chunk * 1000 + index)", quantity: String(index + 1), at: "2026-04-13T10:00:00Z", id: "e\(chunk)-\(index)")
            }
            _ = try ledger.store.commit(batch(UInt64(chunk + 1), events))
        }
        let all = try ledger.store.periodUsage(PeriodUsageQuery(period: period("2026-04"), cells: [MetricDimension(metric: "api_calls")]))
        #expect(all.count == 3000)
        #expect(all.allSatisfy { $0.cells.count == 1 })
        #expect(all.first { $0.tenant == "tenant-2999" }?.cells.first?.aggregate.sum == Quantity(1000))
        let found = try ledger.store.periodUsage(PeriodUsageQuery(period: period("2026-04"), cells: [], search: "TENANT-12"))
        // tenant-12, tenant-120 … 129, tenant-1200 … 1299.
        #expect(found.count == 111)
        #expect(found.allSatisfy { $0.tenant.hasPrefix("tenant-12") })
    }

    @Test(arguments: ledgerFactories)
    func agentActivityComesFromTheBatchRecords(_ factory: any LedgerStoreFactory) throws {
        let ledger = try TestLedger(factory)
        let store = ledger.store
        #expect(try store.agentActivity().isEmpty)
        _ = try store.commit(batch(1, now: "2026-04-13T13:00:00Z", [event(id: "a"), event(id: "a"), event(at: "2026-01-01T00:00:00Z", id: "old")]))
        _ = try store.commit(batch(2, now: "2026-04-13T13:05:00Z", [event(id: "b"), event(at: "2026-04-01T00:00:00Z", id: "c")]))
        _ = try store.commit(batch(7, agent: "edge-<2>", now: "2026-04-13T14:00:00Z", [event("globex", id: "g")]))
        // A resent batch is answered from its record: nothing counted twice.
        _ = try store.commit(batch(1, now: "2026-04-13T13:00:00Z", [event(id: "a"), event(id: "a"), event(at: "2026-01-01T00:00:00Z", id: "old")]))
        let agents = try store.agentActivity()
        #expect(agents.map(\.agent) == ["agent-1", "edge-<2>"])
        let first = try #require(agents.first)
        #expect(first.lastSequence == 2 && first.lastBatchAt == at("2026-04-13T13:05:00Z") && first.batches == 2)
        #expect(first.events.received == 5 && first.events.accepted == 3 && first.events.duplicate == 1 && first.events.rejected == 1)
        #expect(first.events.balances)
        #expect(agents.last?.lastSequence == 7 && agents.last?.events.received == 1)
        // Past the dedupe horizon the records go; the last sequence stays known.
        try store.prune(now: at("2026-07-01T00:00:00Z"))
        let pruned = try store.agentActivity()
        #expect(pruned.map(\.agent) == ["agent-1", "edge-<2>"])
        #expect(pruned.first?.lastSequence == 2 && pruned.first?.lastBatchAt == nil && pruned.first?.batches == 0)
        #expect(pruned.first?.events == ReconciliationCounts())
    }
}
