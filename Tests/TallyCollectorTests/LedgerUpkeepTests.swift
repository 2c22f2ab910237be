import Foundation
import Logging
import TallyCore
import TallyLedger
import Testing
@testable import TallyCollector

/// The collector prunes batch records past the dedupe horizon on its own (`LedgerUpkeep`): the
/// records stop growing, and a batch replayed after its record is gone is refused as expired,
/// never counted again.
@Suite struct LedgerUpkeepTests {
    @Test func batchRecordsPastTheHorizonArePrunedAndTheirReplaysRefused() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tally-pruner-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let writer = Ledger(store: try SQLiteLedgerStore(path: directory.appendingPathComponent("ledger.db").path))
        let old = try EventTime(parsing: "2026-03-10T10:05:00Z")
        let recent = try EventTime(parsing: "2026-04-20T10:05:00Z")
        func batch(_ sequence: UInt64, at time: EventTime) -> IncomingBatch {
            IncomingBatch(
                agent: "a", sequence: sequence, receivedAt: time,
                events: [
                    .valid(
                        UsageEvent(
                            tenant: "acme", metric: "api_calls", quantity: Quantity(1), timestamp: time.advanced(by: .seconds(-60)),
                            id: "e\(sequence)", properties: Properties([])))
                ])
        }
        _ = try await writer.commit(batch(1, at: old))
        _ = try await writer.commit(batch(2, at: recent))
        // 35 days (the default dedupe horizon) after the old batch, before the recent one's.
        let pruner = LedgerUpkeep(ledger: writer, clock: { recent.advanced(by: .seconds(86_400)) }, logger: Logger(label: "test"))
        #expect(try await pruner.pruneOnce() == 1)
        #expect(try await pruner.pruneOnce() == 0)
        await #expect(throws: LedgerError.batchExpired(agent: "a", sequence: 1)) { try await writer.commit(batch(1, at: old)) }
        #expect(try await writer.commit(batch(2, at: recent)).accepted == 1, "a recent replay still gets its recorded outcome")
        let received = try await writer.read { store throws(LedgerError) in try store.reconciliation(ReconciliationFilter()).total.received }
        #expect(received == 2)
        await writer.shutdown()
    }

    /// The scheduled fold: committed cells reach the aggregate tables without a read asking.
    @Test func theScheduledFoldEmptiesTheLog() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tally-fold-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let ledger = Ledger(store: try SQLiteLedgerStore(path: directory.appendingPathComponent("ledger.db").path))
        let now = EventTime.now()
        _ = try await ledger.commit(
            IncomingBatch(
                agent: "a", sequence: 1, receivedAt: now,
                events: [
                    .valid(
                        UsageEvent(
                            tenant: "acme", metric: "api_calls", quantity: Quantity(3), timestamp: now.advanced(by: .seconds(-60)),
                            id: "e1", properties: Properties([])))
                ]))
        let unfolded = { () async throws -> Bool in try await ledger.perform { store throws(LedgerError) in try store.hasUnfoldedAggregates() } }
        #expect(try await unfolded())
        try await LedgerUpkeep(ledger: ledger, logger: Logger(label: "test")).foldOnce()
        #expect(try await !unfolded())
        let stored = try await ledger.perform { store throws(LedgerError) in
            try store.storedAggregates(tenant: "acme", period: BillingPeriod(containing: now), grain: .month)
        }
        #expect(stored.values.map(\.sum) == [Quantity(3)], "\(stored)")
        await ledger.shutdown()
    }
}
