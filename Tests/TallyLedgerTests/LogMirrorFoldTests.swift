import Synchronization
import TallyCore
import TallyTestSupport
import Testing
@testable import TallyLedger

/// The SQLite writer folds the aggregate log from the cells it logged, kept in memory
/// (`LogMirror`), instead of reading its rows back: the fold must store exactly what a fold that
/// reads the rows stores, and go back to the rows whenever the log holds a row it did not log.
@Suite(.offThePool) struct LogMirrorFoldTests {
    /// Two ledgers get the same batches and fold at the same moments: one from its own cells,
    /// the reference reopened first, so that it reads the rows back. Every answer agrees, and
    /// the audit finds the aggregates equal to the raw events.
    @Test(arguments: [UInt64(21), 22])
    func foldingFromTheWritersCellsStoresWhatReadingTheRowsStores(seed: UInt64) throws {
        let configuration = TestLedger.foldingOnRequest
        let ledger = try TestLedger(SQLiteFactory(), configuration: configuration)
        let reference = try TestLedger(SQLiteFactory(), configuration: configuration)
        let store = try #require(ledger.store as? SQLiteLedgerStore)
        var random = SplitMix64(seed: seed)
        // February to April, received on April 11th: late events billed in April as adjustments.
        let events = workload(count: 4000, seed: seed, start: at("2026-02-20T00:00:00Z"), spanHours: 24 * 50, tenants: 3)
        var offset = 0
        var sequence: UInt64 = 0
        var folds = 0
        while offset < events.count {
            for _ in 0..<(1 + random.next() % 4) where offset < events.count {
                let slice = Array(events[offset..<min(offset + 20 + Int(random.next() % 150), events.count)])
                offset += slice.count
                sequence += 1
                let expected = try reference.store.commit(batch(sequence, now: "2026-04-11T00:00:00Z", slice))
                #expect(try ledger.store.commit(batch(sequence, now: "2026-04-11T00:00:00Z", slice)) == expected)
            }
            guard try ledger.store.hasUnfoldedAggregates() else { continue }
            try ledger.store.foldAggregates()
            try reference.reopen()  // opening folds what is logged, reading the rows
            folds += 1
            let difference = try UnfoldedLogReadTests.Answers(ledger.store).firstDifference(from: UnfoldedLogReadTests.Answers(reference.store))
            #expect(difference == nil, "seed \(seed), fold \(folds): \(difference ?? "")")
        }
        #expect(folds >= 10)
        // The log was empty when the store opened: no fold read rows back.
        #expect(store.foldsReadingRows == 0, "folds that read the rows: \(store.foldsReadingRows) of \(folds)")
        for tenant in 0..<3 {
            for month in ["2026-02", "2026-03", "2026-04"] {
                let drift = try ledger.store.recomputeAggregates(tenant: "tenant-\(tenant)", period: period(month))
                #expect(drift.differences.count == 0, "tenant-\(tenant) \(month): \(drift.differences.prefix(3))")
            }
        }
    }

    /// The writer folds when a fold would write `aggregateBufferCells` distinct cells, as the
    /// mirror counts them once the preparation threads merged the batches (`LogMerger`), not when
    /// the batches logged that many: batches that keep hitting the same cells fold at eight
    /// times as many logged cells, batches of new cells at the buffer.
    @Test func theWriterFoldsWhenTheDistinctCellsFillTheBufferNotTheLoggedOnes() throws {
        var configuration = TestLedger.configuration
        configuration.aggregateBufferCells = 40
        let ledger = try TestLedger(SQLiteFactory(), configuration: configuration)
        let store = try #require(ledger.store as? SQLiteLedgerStore)
        let merger = try #require(store.logMerger())
        try store.foldAggregates()  // the mirror knows the (empty) log
        var sequence: UInt64 = 0
        /// Commits `events`, merges them into the mirror as the collector's preparation threads
        /// do, and tells whether the log is still unfolded.
        func commit(_ events: [UsageEvent]) throws -> Bool {
            sequence += 1
            _ = try store.commit(batch(sequence, events))
            merger.mergeQueued()
            return try store.hasUnfoldedAggregates()
        }

        // The same four events (two endpoints: 2 cells of endpoint, 1 total) in every batch.
        var logged = 0
        var sameBatches = 0
        while try commit((0..<4).map { event(id: "same-\(sequence)-\($0)", [("endpoint", "/e\($0 % 2)")]) }) {
            sameBatches += 1
            logged += 3
            #expect(store.logMirror.distinctCellsBound == 3)
            #expect(sameBatches < 1_000)
            if sameBatches >= 1_000 { return }
        }
        // Folded at eight times the buffer in logged cells (3 per batch), not at 40.
        #expect(logged + 3 >= 8 * 40, "folded after \(sameBatches + 1) batches, \(logged + 3) logged cells")
        #expect(logged < 8 * 40)

        // New cells each batch (a new hour per event): folded as soon as the distinct cells
        // reach 40, long before eight times as many are logged.
        var distinctBatches = 0
        var distinct = 0
        var hour = 0
        while try commit(
            (0..<4).map { index in
                hour += 1
                var new = event(id: "new-\(hour)-\(index)")
                new.timestamp = at("2026-04-01T00:00:00Z").advanced(by: .seconds(3_600 * hour))
                return new
            })
        {
            distinctBatches += 1
            let bound = try #require(store.logMirror.distinctCellsBound)
            #expect(bound > distinct && bound < 40, "\(bound) distinct cells after \(distinctBatches) batches")
            distinct = bound
            #expect(distinctBatches < 100)
            if distinctBatches >= 100 { return }
        }
        #expect(distinctBatches > 0)
        // The commit that folded took the distinct cells from below 40 to 40 or more.
        #expect(distinct + distinct / max(distinctBatches, 1) >= 40, "\(distinct) cells in \(distinctBatches) batches")
        let raw = try store.reconciliation(ReconciliationFilter(period: period("2026-04"))).total.accepted
        #expect(raw == (sameBatches + 1 + distinctBatches + 1) * 4)
    }

    /// A row another connection logged (a second writer on the file), or a fold it did, sends
    /// the next fold back to the rows, and nothing either logged is lost or counted twice.
    @Test func aRowOrAFoldOfAnotherConnectionSendsTheFoldBackToTheRows() throws {
        let configuration = TestLedger.foldingOnRequest
        let ledger = try TestLedger(SQLiteFactory(), configuration: configuration)
        let reference = try TestLedger(SQLiteFactory(), configuration: configuration)
        let store = try #require(ledger.store as? SQLiteLedgerStore)
        let other = try SQLiteLedgerStore(path: ledger.location, configuration: configuration)
        defer { other.close() }
        let events = workload(count: 1200, seed: 5, start: at("2026-04-01T00:00:00Z"), spanHours: 24 * 9, tenants: 3)
        let slices = stride(from: 0, to: events.count, by: 100).map { Array(events[$0..<min($0 + 100, events.count)]) }
        func commit(_ index: Int, on writer: any LedgerStore) throws {
            let incoming = batch(UInt64(index + 1), now: "2026-04-11T00:00:00Z", slices[index])
            _ = try reference.store.commit(incoming)
            _ = try writer.commit(incoming)
        }
        try commit(0, on: store)
        try store.foldAggregates()  // the store now knows the (empty) log
        let readBefore = store.foldsReadingRows

        // Its own batches only: the fold takes its cells.
        try commit(1, on: store)
        try commit(2, on: store)
        try store.foldAggregates()
        #expect(store.foldsReadingRows == readBefore)

        // A batch logged by the other connection between two of its own.
        try commit(3, on: store)
        try commit(4, on: other)
        try commit(5, on: store)
        try store.foldAggregates()
        #expect(store.foldsReadingRows == readBefore + 1)

        // The other connection folds after one of the store's batches (the log is then empty
        // again, at a new generation), and the store logs one more.
        try commit(6, on: store)
        try store.foldAggregates()
        try commit(7, on: store)
        try other.foldAggregates()
        try commit(8, on: store)
        try store.foldAggregates()
        #expect(store.foldsReadingRows == readBefore + 2)

        try commit(9, on: store)
        try store.foldAggregates()
        #expect(store.foldsReadingRows == readBefore + 2)
        try reference.store.foldAggregates()
        let difference = try UnfoldedLogReadTests.Answers(store).firstDifference(from: UnfoldedLogReadTests.Answers(reference.store))
        #expect(difference == nil, "\(difference ?? "")")
        let drift = try store.recomputeAggregates(tenant: "tenant-0", period: period("2026-04"))
        #expect(drift.differences.count == 0, "\(drift.differences.prefix(3))")
    }
}

/// The writer only queues its committed cells; another thread merges them into the mirror
/// (`LogMerger`, the collector's preparation threads), and the fold merges what is left. The
/// folds store what folds that read the rows store, whichever thread merged what, and when.
@Suite(.offThePool) struct LogMergerTests {
    /// A writer's ledger (its store and merger) and a reference ledger for the same batches.
    func ledgers() throws -> (ledger: TestLedger, reference: TestLedger, store: SQLiteLedgerStore, merger: LogMerger) {
        let configuration = TestLedger.foldingOnRequest
        let ledger = try TestLedger(SQLiteFactory(), configuration: configuration)
        let reference = try TestLedger(SQLiteFactory(), configuration: configuration)
        let store = try #require(ledger.store as? SQLiteLedgerStore)
        return (ledger, reference, store, try #require(store.logMerger()))
    }

    @Test func cellsMergedByAnotherThreadFoldAsTheRowsDo() async throws {
        let (ledger, reference, store, merger) = try ledgers()
        let events = workload(count: 3000, seed: 31, start: at("2026-03-25T00:00:00Z"), spanHours: 24 * 20, tenants: 4)
        let slices = stride(from: 0, to: events.count, by: 75).map { Array(events[$0..<min($0 + 75, events.count)]) }
        for (index, slice) in slices.enumerated() {
            let incoming = batch(UInt64(index + 1), now: "2026-04-11T00:00:00Z", slice)
            #expect(try store.commit(incoming) == (try reference.store.commit(incoming)))
            // Every third batch, another thread merges what is queued; every seventh, a fold.
            if index % 3 == 2 { await Task.detached { merger.mergeQueued() }.value }
            if index % 7 == 6 {
                try store.foldAggregates()
                try reference.reopen()
                let difference = try UnfoldedLogReadTests.Answers(store).firstDifference(from: UnfoldedLogReadTests.Answers(reference.store))
                #expect(difference == nil, "after batch \(index): \(difference ?? "")")
            }
        }
        #expect(store.logMirror.batchesMergedAhead > 0)
        #expect(store.foldsReadingRows == 0)
        withExtendedLifetime(ledger) {}  // it owns (and closes) the store
    }

    /// A thread merging without pause while the writer commits and folds: every fold still
    /// stores what the rows say, and the aggregates equal the raw events.
    @Test func mergingWhileTheWriterCommitsAndFoldsLosesNothing() async throws {
        let (ledger, reference, store, merger) = try ledgers()
        let stop = Mutex(false)
        let background = Task.detached {
            while !stop.withLock({ $0 }) {
                merger.mergeQueued()
                await Task.yield()
            }
        }
        let events = workload(count: 4000, seed: 32, start: at("2026-04-01T00:00:00Z"), spanHours: 24 * 9, tenants: 3)
        let slices = stride(from: 0, to: events.count, by: 50).map { Array(events[$0..<min($0 + 50, events.count)]) }
        for (index, slice) in slices.enumerated() {
            let incoming = batch(UInt64(index + 1), now: "2026-04-11T00:00:00Z", slice)
            _ = try reference.store.commit(incoming)
            _ = try store.commit(incoming)
            if index % 10 == 9 { try store.foldAggregates() }
        }
        stop.withLock { $0 = true }
        await background.value
        try store.foldAggregates()
        try reference.reopen()
        let difference = try UnfoldedLogReadTests.Answers(store).firstDifference(from: UnfoldedLogReadTests.Answers(reference.store))
        #expect(difference == nil, "\(difference ?? "")")
        #expect(store.foldsReadingRows == 0)
        for tenant in 0..<3 {
            let drift = try store.recomputeAggregates(tenant: "tenant-\(tenant)", period: period("2026-04"))
            #expect(drift.differences.isEmpty, "tenant-\(tenant): \(drift.differences.prefix(3))")
        }
        withExtendedLifetime(ledger) {}  // it owns (and closes) the store
    }
}
