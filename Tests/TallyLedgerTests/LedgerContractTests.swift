import TallyCore
import TallyLedger
import TallyTestSupport
import Testing

/// The contract every `LedgerStore` backend must meet, run against each factory.
@Suite(.offThePool) struct LedgerContractTests {
    @Test(arguments: ledgerFactories)
    func dedupesWithinABatchFirstWins(_ factory: any LedgerStoreFactory) throws {
        let ledger = try TestLedger(factory)
        let first = event(id: "a")
        var retry = first
        retry.quantity = Quantity(7)  // same id: same fingerprint; the first one wins
        let outcome = try ledger.store.commit(batch(1, [first, retry, event(id: "b")]))
        #expect(outcome.accepted == 2)
        #expect(outcome.duplicate == 1)
        #expect(outcome.received == 3)
        let totals = try ledger.store.periodTotals(tenant: "acme", metric: "api_calls", period: period("2026-04"))
        #expect(totals.usage?.sum == Quantity(2))
        #expect(totals.usage?.count == 2)
        let refused = try ledger.store.refusedEvents(agent: "agent-1", sequence: 1)
        #expect(refused.map(\.batchIndex) == [1])
        #expect(refused.first?.status == .duplicate)
        #expect(refused.first?.quantity == Quantity(7))
    }

    @Test(arguments: ledgerFactories)
    func dedupesAcrossBatchesAndAgents(_ factory: any LedgerStoreFactory) throws {
        let ledger = try TestLedger(factory)
        let original = event(quantity: "2.5", id: "x")
        _ = try ledger.store.commit(batch(1, [original]))
        let outcome = try ledger.store.commit(batch(1, agent: "agent-2", [original, event(id: "y")]))
        #expect(outcome.accepted == 1)
        #expect(outcome.duplicate == 1)
        let totals = try ledger.store.periodTotals(tenant: "acme", metric: "api_calls", period: period("2026-04"))
        #expect(totals.usage?.sum == (try Quantity(parsing: "3.5")))
    }

    /// SPEC §6, per-event rules: a rejected event neither is nor makes a duplicate, and a
    /// committed sequence resent with the same events in another order is a reused sequence.
    @Test(arguments: ledgerFactories)
    func rejectedEventsMakeNoDuplicatesAndOrderMattersForReuse(_ factory: any LedgerStoreFactory) throws {
        let ledger = try TestLedger(factory)
        let tooOld = event(at: "2026-01-01T00:00:00Z", id: "old")
        let outcome = try ledger.store.commit(batch(1, [tooOld, event(id: "a"), event(id: "b")]))
        #expect(outcome.rejections == [.init(index: 0, reason: .tooOld)])
        // The same event, later valid (arrival within the late-arrival limit): accepted, not a duplicate.
        let later = try ledger.store.commit(batch(2, now: "2026-01-02T00:00:00Z", [tooOld]))
        #expect(later.accepted + later.late == 1 && later.duplicate == 0, "\(later)")
        let reordered = batch(1, [event(id: "b"), event(id: "a"), tooOld])
        #expect(throws: LedgerError.sequenceReused(agent: reordered.agent, sequence: 1)) { try ledger.store.commit(reordered) }
    }

    @Test(arguments: ledgerFactories)
    func replayedBatchTouchesNothingAndAnswersTheSame(_ factory: any LedgerStoreFactory) throws {
        let ledger = try TestLedger(factory)
        let events = [event(id: "1"), event(id: "1"), event(at: "2026-01-01T00:00:00Z", id: "old"), event(id: "2")]
        var incoming = batch(9, events)
        incoming.events.append(.invalid(InvalidEvent(EventRejection(.missingField, field: "tenant", "tenant is required"))))
        let first = try ledger.store.commit(incoming)
        let reconciliation = try ledger.store.reconciliation(ReconciliationFilter())
        let aggregates = try ledger.store.storedAggregates(tenant: "acme", period: period("2026-04"))
        try ledger.reopen()
        // Same (agent, sequence), same content: the stored outcome, nothing touched.
        let second = try ledger.store.commit(incoming)
        #expect(second == first)
        // Same (agent, sequence), different content: a reused sequence, refused, nothing touched.
        var reused = incoming
        reused.events = [.valid(event(id: "3"))]
        #expect(throws: LedgerError.sequenceReused(agent: incoming.agent, sequence: incoming.sequence)) {
            try ledger.store.commit(reused)
        }
        #expect(first.accepted == 2 && first.duplicate == 1 && first.rejected == 2)
        #expect(first.rejections == [.init(index: 2, reason: .tooOld), .init(index: 4, reason: .missingField)])
        #expect(try ledger.store.reconciliation(ReconciliationFilter()) == reconciliation)
        #expect(try ledger.store.storedAggregates(tenant: "acme", period: period("2026-04")) == aggregates)
        var scanned = 0
        try ledger.store.scanRawEvents(tenant: "acme", period: period("2026-04")) { _ in scanned += 1 }
        #expect(scanned == 2)
    }

    @Test(arguments: ledgerFactories)
    func lateEventBecomesAnAdjustmentTaggedWithItsPeriod(_ factory: any LedgerStoreFactory) throws {
        let ledger = try TestLedger(factory)
        let now = "2026-04-05T00:00:00Z"  // March closed at 2026-04-04T00:00Z
        let outcome = try ledger.store.commit(
            batch(
                1, now: now,
                [
                    event(quantity: "3", at: "2026-03-20T10:00:00Z", id: "late"),
                    event(quantity: "5", at: "2026-04-04T10:00:00Z", id: "now"),
                ]))
        #expect(outcome.accepted == 1 && outcome.late == 1 && outcome.adjusted == 1 && outcome.rejections.isEmpty)
        let march = try ledger.store.periodTotals(tenant: "acme", metric: "api_calls", period: period("2026-03"))
        #expect(march.usage == nil)
        #expect(march.adjustments.isEmpty)
        let april = try ledger.store.periodTotals(tenant: "acme", metric: "api_calls", period: period("2026-04"))
        #expect(april.usage?.sum == Quantity(5))
        #expect(april.adjustments.map(\.original) == [period("2026-03")])
        #expect(april.adjustments.first?.aggregate.sum == Quantity(3))
        // By event time, the usage happened in March.
        let usage = try ledger.store.usage(
            UsageQuery(tenant: "acme", metric: "api_calls", from: period("2026-03").start, to: period("2026-05").start, granularity: .month))
        #expect(usage.map(\.aggregate.sum) == [Quantity(3), Quantity(5)])
        var statuses: [EventStatus] = []
        try ledger.store.scanRawEvents(tenant: "acme", period: period("2026-03")) { statuses.append($0.status) }
        #expect(statuses == [.adjusted])
        let rows = try ledger.store.reconciliation(ReconciliationFilter(period: period("2026-03")))
        #expect(rows.total.late == 1 && rows.total.adjusted == 1 && rows.total.balances)
    }

    @Test(arguments: ledgerFactories)
    func latePolicyRejectKeepsTheEventUnbilled(_ factory: any LedgerStoreFactory) throws {
        var configuration = TestLedger.configuration
        configuration.lateWindow.policy = .reject
        let ledger = try TestLedger(factory, configuration: configuration)
        let outcome = try ledger.store.commit(
            batch(1, now: "2026-04-05T00:00:00Z", [event(at: "2026-04-01T00:00:00Z", id: "ok"), event(at: "2026-03-20T10:00:00Z", id: "late")]))
        #expect(outcome.accepted == 1 && outcome.late == 1 && outcome.adjusted == 0)
        #expect(outcome.rejections == [.init(index: 1, reason: .late)])
        let april = try ledger.store.periodTotals(tenant: "acme", metric: "api_calls", period: period("2026-04"))
        #expect(april.usage?.count == 1 && april.adjustments.isEmpty)
        #expect(try ledger.store.periodTotals(tenant: "acme", metric: "api_calls", period: period("2026-03")).usage == nil)
        var kept: [EventStatus] = []
        try ledger.store.scanRawEvents(tenant: "acme", period: period("2026-03")) { kept.append($0.status) }
        #expect(kept == [.late])
        // A retry of the refused late event is a duplicate, still unbilled.
        let retry = try ledger.store.commit(batch(2, now: "2026-04-06T00:00:00Z", [event(at: "2026-03-20T10:00:00Z", id: "late")]))
        #expect(retry.duplicate == 1)
    }

    @Test(arguments: ledgerFactories)
    func tooOldAndFutureEventsAreRejectedAndKept(_ factory: any LedgerStoreFactory) throws {
        let ledger = try TestLedger(factory)
        let now = "2026-04-13T12:00:00Z"
        let outcome = try ledger.store.commit(
            batch(
                1, now: now,
                [
                    event(at: "2026-03-09T11:59:59Z", id: "old"),  // 35 days and 1 s before
                    event(at: "2026-04-13T12:05:00Z", id: "edge"),  // exactly the allowed skew
                    event(at: "2026-04-13T12:05:01Z", id: "future"),
                ]))
        #expect(outcome.accepted == 1 && outcome.rejected == 2)
        #expect(outcome.rejections == [.init(index: 0, reason: .tooOld), .init(index: 2, reason: .futureTimestamp)])
        let refused = try ledger.store.refusedEvents(agent: "agent-1", sequence: 1)
        #expect(refused.map(\.reason) == [.tooOld, .futureTimestamp])
        #expect(refused.allSatisfy { $0.fingerprint != nil && $0.quantity == Quantity(1) && $0.tenant == "acme" })
        let rows = try ledger.store.reconciliation(ReconciliationFilter(tenant: "acme"))
        #expect(rows.total.received == 3 && rows.total.rejected == 2 && rows.total.balances)
        #expect(Set(rows.map(\.period)) == [period("2026-03"), period("2026-04")])
    }

    @Test(arguments: ledgerFactories)
    func invalidEventsAreCountedWithTheirReason(_ factory: any LedgerStoreFactory) throws {
        let ledger = try TestLedger(factory)
        var incoming = batch(1, [event(id: "ok")])
        incoming.events.append(
            .invalid(
                InvalidEvent(
                    EventRejection(.invalidField, field: "quantity", "must not be negative"), tenant: "acme", metric: "api_calls",
                    source: #"{"tenant":"acme","quantity":-1}"#)))
        incoming.events.append(.invalid(InvalidEvent(EventRejection(.malformed, field: nil, "not JSON"), source: "{{")))
        let outcome = try ledger.store.commit(incoming)
        #expect(outcome.rejections == [.init(index: 1, reason: .invalidField), .init(index: 2, reason: .malformed)])
        let rows = try ledger.store.reconciliation(ReconciliationFilter(agent: "agent-1"))
        #expect(rows.first { $0.tenant == "acme" }?.counts.rejected == 1)
        #expect(rows.first { $0.tenant == "" }?.counts.rejected == 1)
        #expect(rows.total.received == 3 && rows.total.balances)
        #expect(try ledger.store.refusedEvents(agent: "agent-1", sequence: 1).map(\.message) == ["must not be negative", "not JSON"])
    }

    @Test(arguments: ledgerFactories)
    func aggregatesEqualARecountFromRawEvents(_ factory: any LedgerStoreFactory) throws {
        let ledger = try TestLedger(factory)
        let start = at("2026-04-01T00:00:00Z")
        let events = workload(count: 3000, seed: 42, start: start, spanHours: 20, tenants: 7)  // dense: cells repeat within and across batches
        var expected: [String: (sum: Quantity, count: Int64, max: Quantity)] = [:]
        var seen = Set<Fingerprint>()
        for item in events where seen.insert(Fingerprint(of: item)).inserted {
            let key = item.tenant + "/" + item.metric
            var entry = expected[key] ?? (Quantity.zero, 0, Quantity.zero)
            entry.sum = try entry.sum.adding(item.quantity)
            entry.count += 1
            entry.max = max(entry.max, item.quantity)
            expected[key] = entry
        }
        var outcomes = BatchOutcome()
        for (sequence, offset) in stride(from: 0, to: events.count, by: 250).enumerated() {
            let slice = Array(events[offset..<min(offset + 250, events.count)])
            let outcome = try ledger.store.commit(batch(UInt64(sequence), now: "2026-04-10T00:00:00Z", slice))
            outcomes.accepted += outcome.accepted
            outcomes.duplicate += outcome.duplicate
        }
        #expect(outcomes.accepted == seen.count)
        #expect(outcomes.duplicate == events.count - seen.count)
        #expect(outcomes.duplicate > 0)
        for (key, want) in expected {
            let parts = key.split(separator: "/").map(String.init)
            let totals = try ledger.store.periodTotals(tenant: parts[0], metric: parts[1], period: period("2026-04"))
            #expect(totals.usage?.sum == want.sum, "\(key)")
            #expect(totals.usage?.count == want.count, "\(key)")
            #expect(totals.usage?.max == want.max, "\(key)")
            let days = try ledger.store.usage(
                UsageQuery(tenant: parts[0], metric: parts[1], from: start, to: period("2026-04").end, granularity: .day))
            #expect(try UsageAggregate.merging(days.map(\.aggregate))?.sum == want.sum, "\(key) by day")
            let byEndpoint = try ledger.store.usage(
                UsageQuery(
                    tenant: parts[0], metric: parts[1], from: start, to: period("2026-04").end, granularity: .month, groupBy: "endpoint"))
            #expect(byEndpoint.count == 5)
            #expect(try UsageAggregate.merging(byEndpoint.map(\.aggregate))?.sum == want.sum, "\(key) by endpoint")
        }
        for tenant in 0..<7 {
            let drift = try ledger.store.recomputeAggregates(tenant: "tenant-\(tenant)", period: period("2026-04"))
            #expect(drift.differences.isEmpty)
            #expect(drift.cellsCompared > 0)
        }
    }

    @Test(arguments: ledgerFactories)
    func recomputeReportsDrift(_ factory: any LedgerStoreFactory) throws {
        let ledger = try TestLedger(factory)
        _ = try ledger.store.commit(batch(1, [event(id: "a"), event(id: "b", [("endpoint", "/x")])]))
        // A backend-neutral way to make drift: compare against a store that saw one more event.
        let other = try TestLedger(factory)
        _ = try other.store.commit(batch(1, [event(id: "a")]))
        let clean = try ledger.store.recomputeAggregates(tenant: "acme", period: period("2026-04"))
        #expect(clean.differences.isEmpty)
        let stored = try other.store.storedAggregates(tenant: "acme", period: period("2026-04"))
        let recounted = try ledger.store.storedAggregates(tenant: "acme", period: period("2026-04"))
        #expect(stored != recounted)
    }

    @Test(arguments: ledgerFactories)
    func reconciliationIdentityHoldsPerAgentTenantAndPeriod(_ factory: any LedgerStoreFactory) throws {
        let ledger = try TestLedger(factory)
        let events = workload(count: 1200, seed: 7, start: at("2026-03-25T00:00:00Z"), spanHours: 24 * 11, tenants: 5)
        var sent: [String: Int] = [:]
        for (sequence, offset) in stride(from: 0, to: events.count, by: 100).enumerated() {
            let agent = "agent-\(sequence % 3)"
            var incoming = batch(UInt64(sequence), agent: agent, now: "2026-04-06T00:00:00Z", Array(events[offset..<(offset + 100)]))
            incoming.events.append(.invalid(InvalidEvent(EventRejection(.malformed, field: nil, "bad"))))
            _ = try ledger.store.commit(incoming)
            _ = try ledger.store.commit(incoming)  // a lost ack: replayed, must not count twice
            sent[agent, default: 0] += incoming.events.count
        }
        let rows = try ledger.store.reconciliation(ReconciliationFilter())
        #expect(rows.allSatisfy { $0.counts.balances })
        for (agent, count) in sent {
            #expect(rows.filter { $0.agent == agent }.total.received == Int64(count))
        }
        let total = rows.total
        #expect(total.received == 1212 && total.late > 0 && total.adjusted == total.late && total.duplicate > 0 && total.rejected == 12)
        for tenant in Set(rows.map(\.tenant)) {
            #expect(rows.filter { $0.tenant == tenant }.total.balances)
        }
        // Accepted events equal the billed counts of the aggregates.
        var billed: Int64 = 0
        for tenant in 0..<5 {
            for metric in ["api_calls", "bytes_out", "compute_ms", "exports"] {
                for month in ["2026-03", "2026-04"] {
                    let totals = try ledger.store.periodTotals(tenant: "tenant-\(tenant)", metric: metric, period: period(month))
                    billed += (totals.usage?.count ?? 0) + totals.adjustments.reduce(0) { $0 + $1.aggregate.count }
                }
            }
        }
        #expect(billed == total.accepted + total.adjusted)
    }

    @Test(arguments: ledgerFactories)
    func uniqueCountAndLatestAreExact(_ factory: any LedgerStoreFactory) throws {
        let ledger = try TestLedger(factory)
        let users = ["u1", "u2", "u1", "u3", "u2", "u1"]
        let events = users.enumerated().map { index, user in
            event("acme", "active_users", quantity: "\(index + 1)", at: "2026-04-10T10:00:0\(index)Z", id: "e\(index)", [("user", user)])
        }
        // Two events at the same latest instant: the greater fingerprint wins.
        let tieA = event("acme", "active_users", quantity: "100", at: "2026-04-10T11:00:00Z", id: "tie-a", [("user", "u4")])
        let tieB = event("acme", "active_users", quantity: "200", at: "2026-04-10T11:00:00Z", id: "tie-b", [("user", "u4")])
        _ = try ledger.store.commit(batch(1, events + [tieA]))
        _ = try ledger.store.commit(batch(2, [tieB]))
        let unique = try ledger.store.uniqueCount(tenant: "acme", metric: "active_users", property: "user", period: period("2026-04"))
        #expect(unique == UniqueCount(usage: 4, adjustments: 0))
        let totals = try ledger.store.periodTotals(tenant: "acme", metric: "active_users", period: period("2026-04"))
        let winner = Fingerprint(of: tieA) > Fingerprint(of: tieB) ? tieA : tieB
        #expect(totals.usage?.latest.quantity == winner.quantity)
        #expect(totals.usage?.latest.fingerprint == Fingerprint(of: winner))
        #expect(totals.usage?.max == Quantity(200))
        // A late user of March billed in April is an adjustment; a late repeat of a March user is not new.
        _ = try ledger.store.commit(
            batch(3, now: "2026-03-30T00:00:00Z", [event("acme", "active_users", at: "2026-03-15T00:00:00Z", id: "m1", [("user", "u1")])]))
        _ = try ledger.store.commit(
            batch(
                4, now: "2026-04-05T00:00:00Z",
                [
                    event("acme", "active_users", at: "2026-03-16T00:00:00Z", id: "m2", [("user", "u1")]),
                    event("acme", "active_users", at: "2026-03-16T00:00:00Z", id: "m3", [("user", "u9")]),
                ]))
        #expect(
            try ledger.store.uniqueCount(tenant: "acme", metric: "active_users", property: "user", period: period("2026-04"))
                == UniqueCount(usage: 4, adjustments: 1))
        #expect(
            try ledger.store.uniqueCount(tenant: "acme", metric: "active_users", property: "user", period: period("2026-03"))
                == UniqueCount(usage: 1, adjustments: 0))
    }

    @Test(arguments: ledgerFactories)
    func crashBeforeCommitLeavesNothingHalfWritten(_ factory: any LedgerStoreFactory) throws {
        let ledger = try TestLedger(factory)
        _ = try ledger.store.commit(batch(1, [event(id: "kept")]))
        let before = try ledger.store.reconciliation(ReconciliationFilter())
        let aggregatesBefore = try ledger.store.storedAggregates(tenant: "acme", period: period("2026-04"))
        let doomed = batch(2, [event(id: "lost-1"), event(id: "lost-2", [("endpoint", "/a")]), event(id: "kept")])
        factory.crashBeforeNextCommit(ledger.store)
        #expect(throws: LedgerError.self) { try ledger.store.commit(doomed) }
        try ledger.reopen()
        #expect(try ledger.store.reconciliation(ReconciliationFilter()) == before)
        #expect(try ledger.store.storedAggregates(tenant: "acme", period: period("2026-04")) == aggregatesBefore)
        #expect(try ledger.store.refusedEvents(agent: "agent-1", sequence: 2).isEmpty)
        var ids: [String?] = []
        try ledger.store.scanRawEvents(tenant: "acme", period: period("2026-04")) { ids.append($0.event.id) }
        #expect(ids == ["kept"])
        // The agent retransmits: the batch is processed as new, exactly once.
        let outcome = try ledger.store.commit(doomed)
        #expect(outcome.accepted == 2 && outcome.duplicate == 1)
        #expect(try ledger.store.recomputeAggregates(tenant: "acme", period: period("2026-04")).differences.isEmpty)
    }

    @Test(arguments: ledgerFactories)
    func bufferedAggregatesSurviveACrashAndAreFoldedOnOpen(_ factory: any LedgerStoreFactory) throws {
        let ledger = try TestLedger(factory)
        // No read between the commits: batch 1's cells are only in the aggregate buffer and its
        // log when the crash comes.
        _ = try ledger.store.commit(batch(1, [event(id: "a"), event(id: "b", [("endpoint", "/x")])]))
        factory.crashBeforeNextCommit(ledger.store)
        #expect(throws: LedgerError.self) { try ledger.store.commit(batch(2, [event(id: "lost")])) }
        try ledger.reopen()
        let totals = try ledger.store.periodTotals(tenant: "acme", metric: "api_calls", period: period("2026-04"))
        #expect(totals.usage?.count == 2)
        #expect(try ledger.store.recomputeAggregates(tenant: "acme", period: period("2026-04")).differences.isEmpty)
        // The batch that died is retransmitted and counted once.
        #expect(try ledger.store.commit(batch(2, [event(id: "lost")])).accepted == 1)
        #expect(try ledger.store.periodTotals(tenant: "acme", metric: "api_calls", period: period("2026-04")).usage?.count == 3)
    }

    @Test(arguments: ledgerFactories)
    func rollupsAnswerLikeTheHourlyCellsAcrossDaysAndMonths(_ factory: any LedgerStoreFactory) throws {
        var configuration = TestLedger.configuration
        configuration.aggregateBufferCells = 7  // fold often, between and inside the commits below
        configuration.lateWindow.lateArrivalLimit = .seconds(90 * 86_400)
        configuration.dedupeHorizon = .seconds(90 * 86_400)
        let ledger = try TestLedger(factory, configuration: configuration)
        let events = workload(count: 2000, seed: 7, start: at("2026-02-20T00:00:00Z"), spanHours: 24 * 50, tenants: 3)
        for (sequence, offset) in stride(from: 0, to: events.count, by: 100).enumerated() {
            _ = try ledger.store.commit(
                batch(UInt64(sequence), now: "2026-04-11T00:00:00Z", Array(events[offset..<min(offset + 100, events.count)])))
        }
        let from = at("2026-02-27T05:00:00Z")
        let to = at("2026-04-03T07:00:00Z")
        for tenant in 0..<3 {
            for granularity in UsageQuery.Granularity.allCases {
                for groupBy in [nil, "endpoint"] as [String?] {
                    let query = UsageQuery(
                        tenant: "tenant-\(tenant)", metric: "api_calls", from: from, to: to, granularity: granularity, groupBy: groupBy)
                    let hourly = try ledger.store.usage(
                        UsageQuery(tenant: query.tenant, metric: query.metric, from: from, to: to, granularity: .hour, groupBy: groupBy))
                    var expected: [String: UsageAggregate] = [:]
                    for bucket in hourly {
                        let key = "\(query.bucketStart(of: bucket.start)) \(bucket.group ?? "-")"
                        if var existing = expected[key] {
                            try existing.merge(bucket.aggregate)
                            expected[key] = existing
                        } else {
                            expected[key] = bucket.aggregate
                        }
                    }
                    let answered = try ledger.store.usage(query)
                    #expect(answered.count == expected.count, "\(granularity) \(groupBy ?? "-")")
                    for bucket in answered {
                        #expect(expected["\(bucket.start) \(bucket.group ?? "-")"] == bucket.aggregate, "\(granularity) \(bucket.start)")
                    }
                }
            }
            for month in ["2026-02", "2026-03", "2026-04"] {
                let drift = try ledger.store.recomputeAggregates(tenant: "tenant-\(tenant)", period: period(month))
                #expect(drift.differences.isEmpty, "tenant-\(tenant) \(month)")
                let monthly = try ledger.store.storedAggregates(tenant: "tenant-\(tenant)", period: period(month), grain: .month)
                #expect(monthly.keys.allSatisfy { $0.hourStart == period(month).start })
            }
        }
    }

    @Test(arguments: ledgerFactories)
    func sumNearTheInt128EdgeFailsClearlyAndCommitsNothing(_ factory: any LedgerStoreFactory) throws {
        let ledger = try TestLedger(factory)
        let half = Quantity(nanos: Int128.max / 2 + 1)
        var big = event(id: "big-1")
        big.quantity = half
        _ = try ledger.store.commit(batch(1, [big]))
        var bigger = event(id: "big-2")
        bigger.quantity = half
        let error = #expect(throws: LedgerError.self) { try ledger.store.commit(batch(2, [bigger])) }
        if case .quantityOverflow(let message)? = error {
            #expect(message.contains("acme/api_calls"))
        } else {
            Issue.record("expected quantityOverflow, got \(String(describing: error))")
        }
        // In one batch the in-memory pre-combination overflows first, with the same error.
        var third = event(id: "big-4")
        third.quantity = half
        let inBatch = #expect(throws: LedgerError.self) { try ledger.store.commit(batch(4, [bigger, third])) }
        if case .quantityOverflow? = inBatch {} else { Issue.record("expected quantityOverflow, got \(String(describing: inBatch))") }
        let totals = try ledger.store.periodTotals(tenant: "acme", metric: "api_calls", period: period("2026-04"))
        #expect(totals.usage?.sum == half && totals.usage?.count == 1)
        #expect(try ledger.store.reconciliation(ReconciliationFilter()).total.received == 1)
    }

    @Test(arguments: ledgerFactories)
    func pruneBoundsBatchRecordsAndKeepsRawEvents(_ factory: any LedgerStoreFactory) throws {
        let ledger = try TestLedger(factory)
        _ = try ledger.store.commit(batch(1, now: "2026-04-01T00:00:00Z", [event(at: "2026-04-01T00:00:00Z", id: "a")]))
        _ = try ledger.store.commit(batch(2, now: "2026-05-10T00:00:00Z", [event(at: "2026-05-10T00:00:00Z", id: "b")]))
        let report = try ledger.store.prune(now: at("2026-05-10T00:00:00Z"))
        #expect(report.batchRecordsDeleted == 1)
        #expect(throws: LedgerError.batchExpired(agent: "agent-1", sequence: 1)) {
            try ledger.store.commit(batch(1, now: "2026-05-10T00:00:01Z", [event(at: "2026-04-01T00:00:00Z", id: "a")]))
        }
        let replay = try ledger.store.commit(batch(2, now: "2026-05-11T00:00:00Z", [event(at: "2026-05-10T00:00:00Z", id: "b")]))
        #expect(replay.accepted == 1)
        var kept = 0
        try ledger.store.scanRawEvents(tenant: "acme", period: period("2026-04")) { _ in kept += 1 }
        #expect(kept == 1)
    }

    @Test(arguments: ledgerFactories)
    func configurationRefusesAHorizonShorterThanTheLateLimit(_ factory: any LedgerStoreFactory) throws {
        var configuration = TestLedger.configuration
        configuration.dedupeHorizon = .seconds(86_400)
        #expect(throws: LedgerError.self) { try TestLedger(factory, configuration: configuration) }
    }
}
