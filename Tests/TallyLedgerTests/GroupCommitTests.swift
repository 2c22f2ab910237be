import Testing
import TallyCore
@testable import TallyLedger

/// `commit(_:)` of several batches (what a collector's single writer commits when batches queue
/// up behind the one it is committing): each batch answered, and the ledger left, exactly as
/// committing them one by one does, whichever of them fail; and on SQLite, one transaction,
/// which a failed commit leaves whole or not at all.
@Suite struct LedgerGroupCommitTests {
    /// Overlapping batches, a resend inside the group, a reused sequence (refused, alone) and
    /// another agent's batch: the same outcomes and the same ledger as one by one.
    @Test(arguments: ledgerFactories)
    func aGroupCommitsAsItsBatchesDoOneByOne(_ factory: any LedgerStoreFactory) throws {
        let events = workload(count: 300, seed: 11, start: at("2026-04-13T10:00:00Z"), spanHours: 2, tenants: 4)
        let other = workload(count: 200, seed: 12, start: at("2026-04-13T10:00:00Z"), spanHours: 2, tenants: 4)
        let batches = [
            batch(1, Array(events[0..<200])),
            // 50 of batch 1's events again: duplicates of a batch earlier in the same group.
            batch(2, Array(events[150..<300])),
            // Batch 1 resent in the same group: the first copy's outcome.
            batch(1, Array(events[0..<200])),
            // Sequence 1 reused with other events: refused, and only it.
            batch(1, Array(other[0..<10])),
            batch(1, agent: "agent-2", other),
        ]
        let grouped = try TestLedger(factory)
        let alone = try TestLedger(factory)
        func prepared(_ batch: IncomingBatch, for ledger: TestLedger) -> PreparedBatch {
            let prepared = PreparedBatch(batch)
            return ledger.store.batchSpeculator()?.speculate(prepared) ?? prepared
        }
        // Two groups: one that commits whole, one whose transaction fails (the reused sequence)
        // and whose batches are then committed alone.
        let groupResults =
            grouped.store.commit(batches[0..<3].map { prepared($0, for: grouped) })
            + grouped.store.commit(batches[3...].map { prepared($0, for: grouped) })
        let aloneResults = batches.map { batch in
            Result { () throws(LedgerError) in try alone.store.commit(prepared(batch, for: alone)) }
        }
        #expect(groupResults.count == batches.count)
        for (position, (group, one)) in zip(groupResults, aloneResults).enumerated() {
            switch (group, one) {
            case (.success(let group), .success(let one)): #expect(group == one, "batch \(position)")
            case (.failure(let group), .failure(let one)): #expect("\(group)" == "\(one)", "batch \(position)")
            default: Issue.record("batch \(position): \(group) in the group, \(one) alone")
            }
        }
        let outcomes = groupResults.map { try? $0.get() }
        // The workload retries some of its own events: counted as duplicates, not accepted.
        #expect(outcomes[0].map { $0.accepted + $0.duplicate } == 200)
        #expect((outcomes[1]?.duplicate ?? 0) >= 50 && outcomes[1].map { $0.accepted + $0.duplicate } == 150)
        #expect(outcomes[2] == outcomes[0])
        guard case .failure(.sequenceReused) = groupResults[3] else {
            Issue.record("a reused sequence in a group: \(groupResults[3])")
            return
        }
        #expect(outcomes[4].map { $0.accepted + $0.duplicate } == 200)
        #expect(try grouped.store.reconciliation(ReconciliationFilter()) == alone.store.reconciliation(ReconciliationFilter()))
        for grain in AggregateGrain.allCases {
            let mine = try grouped.store.storedAggregates(tenant: nil, period: period("2026-04"), grain: grain)
            #expect(!mine.isEmpty)
            #expect(mine == (try alone.store.storedAggregates(tenant: nil, period: period("2026-04"), grain: grain)), "\(grain)")
        }
    }

    /// A group whose transaction cannot commit (a full disk) leaves nothing of any of its
    /// batches, and the same prepared batches commit once the disk has room, counted once.
    @Test func aGroupThatCannotCommitLeavesNothingAndCommitsLater() throws {
        let ledger = try TestLedger(SQLiteFactory(), configuration: TestLedger.foldingOnRequest)
        let store = try #require(ledger.store as? SQLiteLedgerStore)
        let events = workload(count: 600, seed: 21, start: at("2026-04-13T10:00:00Z"), spanHours: 2, tenants: 3)
        let first = try store.commit(batch(1, Array(events[0..<200])))
        let speculator = try #require(store.batchSpeculator())
        let group = [batch(2, Array(events[200..<400])), batch(3, Array(events[400..<600]))].map {
            speculator.speculate(PreparedBatch($0))
        }
        store.fault = .diskFull
        let refused = store.commit(group)
        #expect(refused.count == 2)
        for result in refused {
            guard case .failure(let error) = result, error.isStoreFailure else {
                Issue.record("committed on a full disk: \(result)")
                continue
            }
        }
        // Read once the disk has room: a reconciliation read folds the log first.
        store.fault = nil
        #expect(try store.reconciliation(ReconciliationFilter()).reduce(0) { $0 + $1.counts.received } == 200)
        let committed = store.commit(group)
        let outcomes = committed.compactMap { try? $0.get() }
        #expect(outcomes.map { $0.accepted + $0.duplicate } == [200, 200])
        #expect(try store.reconciliation(ReconciliationFilter()).reduce(0) { $0 + $1.counts.received } == 600)
        try store.foldAggregates()
        let monthly = try store.storedAggregates(tenant: nil, period: period("2026-04"), grain: .month)
        let accepted = ([first] + outcomes).reduce(0) { $0 + $1.accepted }
        #expect(accepted > 500)
        #expect(monthly.filter { $0.key.dimension.isEmpty }.values.reduce(0) { $0 + Int($1.count) } == accepted)
    }

    /// A collector killed before its group's commit: after a restart none of the group's
    /// batches is in the ledger, and all of them commit when resent.
    @Test func aCrashBeforeTheGroupsCommitLeavesNoneOfItsBatches() throws {
        let ledger = try TestLedger(SQLiteFactory())
        let events = workload(count: 400, seed: 31, start: at("2026-04-13T10:00:00Z"), spanHours: 2, tenants: 3)
        let group = [batch(1, Array(events[0..<200])), batch(2, Array(events[200..<400]))]
        ledger.factory.crashBeforeNextCommit(ledger.store)
        let crashed = ledger.store.commit(group.map { PreparedBatch($0) })
        #expect(crashed.allSatisfy { if case .failure = $0 { true } else { false } })
        try ledger.reopen()
        #expect(try ledger.store.reconciliation(ReconciliationFilter()).isEmpty)
        let resent = ledger.store.commit(group.map { PreparedBatch($0) })
        #expect(resent.map { (try? $0.get()).map { $0.accepted + $0.duplicate } } == [200, 200])
        #expect(try ledger.store.reconciliation(ReconciliationFilter()).reduce(0) { $0 + $1.counts.received } == 400)
    }
}
