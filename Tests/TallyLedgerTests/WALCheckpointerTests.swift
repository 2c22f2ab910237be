import Foundation
import TallyTestSupport
import Testing

@testable import TallyLedger

/// The write-ahead log is copied back into the database file by the checkpointer's own thread,
/// not by the writer's commits (``WALCheckpointer``); the log stays bounded either way, and
/// nothing committed is lost.
@Suite struct WALCheckpointerTests {
    static let pageBytes = 4096 + 24  // a log frame: a page and its header

    func fileSize(_ path: String) -> Int {
        ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? NSNumber)?.intValue ?? 0
    }

    /// Commits 120 batches of the workload to `store` and to `reference`, calling `between`
    /// after each; returns the largest log file seen.
    func commitBatches(
        _ store: SQLiteLedgerStore, reference: TestLedger, between: () async -> Void
    ) async throws -> Int {
        let events = workload(count: 6000, seed: 41, start: at("2026-04-01T00:00:00Z"), spanHours: 24 * 9, tenants: 40)
        var largestLog = 0
        for (index, first) in stride(from: 0, to: events.count, by: 50).enumerated() {
            let incoming = batch(UInt64(index + 1), now: "2026-04-11T00:00:00Z", Array(events[first..<min(first + 50, events.count)]))
            #expect(try store.commit(incoming) == (try reference.store.commit(incoming)))
            await between()
            largestLog = max(largestLog, fileSize(store.path + "-wal"))
        }
        return largestLog
    }

    @Test func theCheckpointerCopiesTheLogAndTheWriterDoesNot() async throws {
        let ledger = try TestLedger(SQLiteFactory(), configuration: TestLedger.foldingOnRequest)
        let reference = try TestLedger(SQLiteFactory(), configuration: TestLedger.foldingOnRequest)
        let store = try #require(ledger.store as? SQLiteLedgerStore)
        let checkpointer = store.walCheckpointer(threshold: 64)
        #expect(store.walCheckpointer(threshold: 64) === checkpointer, "asked twice, one checkpointer")
        let fileBefore = fileSize(store.path)
        // Waiting for the checkpoint asked for after each commit: it never lags, so the writer
        // never has to checkpoint.
        let largestLog = try await commitBatches(store, reference: reference) { await checkpointer.settle() }
        let checkpoints = checkpointer.checkpoints
        #expect(checkpoints.background > 0)
        #expect(checkpoints.writer == 0 && checkpoints.failed == 0, "\(checkpoints)")
        // On a thread named for `top -H` (not NIO's "TP-#0", which the writer's pool uses too).
        let names = threadNamesOfThisProcess()
        #expect(names.contains("tally-checkpt"), "\(names)")
        // A normal thread at a lower nice value, never the idle class (SCHED_IDLE, policy 5):
        // starved while holding a lock, an idle-class thread stops the process's other threads.
        let policies = schedulingPoliciesOfThreads(named: "tally-checkpt")
        #expect(!policies.isEmpty && policies.allSatisfy { $0 == 0 }, "SCHED_OTHER is 0: \(policies)")
        // Pages reached the database file, and the log restarted from its beginning instead of
        // growing: never four times the threshold (where the writer would take over).
        #expect(fileSize(store.path) > fileBefore)
        #expect(largestLog < 4 * 64 * Self.pageBytes, "log file \(largestLog) bytes")
        try store.foldAggregates()
        try reference.reopen()
        let difference = try UnfoldedLogReadTests.Answers(store).firstDifference(from: UnfoldedLogReadTests.Answers(reference.store))
        #expect(difference == nil, "\(difference ?? "")")
        // Closed (the checkpointer stopped first) and opened again: everything is there.
        try ledger.reopen()
        let reopened = try UnfoldedLogReadTests.Answers(ledger.store).firstDifference(from: UnfoldedLogReadTests.Answers(reference.store))
        #expect(reopened == nil, "\(reopened ?? "")")
        for tenant in 0..<40 {
            let drift = try ledger.store.recomputeAggregates(tenant: "tenant-\(tenant)", period: period("2026-04"))
            #expect(drift.differences.isEmpty, "tenant-\(tenant): \(drift.differences.prefix(3))")
        }
    }

    /// With its thread stopped (or starved), the log reaches four times the threshold and the
    /// writer checkpoints in its commit, as SQLite's auto-checkpoint did: still bounded.
    @Test func withoutTheThreadTheWriterCheckpointsAndTheLogStaysBounded() async throws {
        let ledger = try TestLedger(SQLiteFactory(), configuration: TestLedger.foldingOnRequest)
        let reference = try TestLedger(SQLiteFactory(), configuration: TestLedger.foldingOnRequest)
        let store = try #require(ledger.store as? SQLiteLedgerStore)
        let checkpointer = store.walCheckpointer(threshold: 16)
        checkpointer.stop()
        let largestLog = try await commitBatches(store, reference: reference) {}
        let checkpoints = checkpointer.checkpoints
        #expect(checkpoints.background == 0)
        #expect(checkpoints.writer > 0 && checkpoints.failed == 0, "\(checkpoints)")
        // The log restarts after each writer checkpoint: four thresholds and one commit's pages.
        #expect(largestLog < 8 * 16 * Self.pageBytes + 256 * Self.pageBytes, "log file \(largestLog) bytes")
        try ledger.reopen()
        try reference.reopen()
        let difference = try UnfoldedLogReadTests.Answers(ledger.store).firstDifference(from: UnfoldedLogReadTests.Answers(reference.store))
        #expect(difference == nil, "\(difference ?? "")")
    }
}
