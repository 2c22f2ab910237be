import Foundation
import TallyCore
import TallyLedger
import Testing
@testable import TallyCollector

/// `Ledger.read`: reads answered on a second connection without waiting for the writer
/// thread, and only when that needs no write.
@Suite struct LedgerReaderTests {
    static func event(_ id: String) -> IncomingEvent {
        .valid(
            UsageEvent(
                tenant: "acme", metric: "api_calls", quantity: Quantity(1),
                timestamp: (try? EventTime(parsing: "2026-03-10T10:00:00Z")) ?? EventTime(microseconds: 0), id: id,
                properties: Properties([])))
    }

    @Test func readsSeeEveryCommitAndDoNotWaitForABusyWriter() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tally-reader-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("ledger.db").path
        let writer = Ledger(store: try SQLiteLedgerStore(path: path), reader: try SQLiteLedgerStore(path: path))
        let receivedAt = try EventTime(parsing: "2026-03-10T10:05:00Z")
        let march = try #require(BillingPeriod("2026-03"))
        _ = try await writer.commit(IncomingBatch(agent: "a", sequence: 1, receivedAt: receivedAt, events: [Self.event("1"), Self.event("2")]))

        // The batch's cells are still in the aggregate log: the read goes to the writer, which
        // folds them first — so it sees the batch.
        let first = try await writer.read { store throws(LedgerError) in
            try store.periodTotals(tenant: "acme", metric: "api_calls", period: march).usage?.count
        }
        #expect(first == 2)

        // The log is empty now. Hold the writer thread and read: the answer must come anyway.
        let gate = DispatchSemaphore(value: 0)
        let (entered, enteredSink) = AsyncStream.makeStream(of: Void.self)
        let busy = Task {
            try await writer.perform { _ throws(LedgerError) in
                enteredSink.yield()
                gate.wait()
            }
        }
        for await _ in entered { break }
        let answer = await withTaskGroup(of: Int64??.self) { group in
            group.addTask {
                try? await writer.read { store throws(LedgerError) in
                    try store.periodTotals(tenant: "acme", metric: "api_calls", period: march).usage?.count
                }
            }
            group.addTask {
                try? await Task.sleep(for: .seconds(20))  // a timeout, so a missing feature fails instead of hanging
                return .some(nil)
            }
            let first = await group.next() ?? nil
            gate.signal()
            group.cancelAll()
            return first
        }
        #expect(answer == .some(.some(2)), "the read waited for the busy writer")
        _ = try await busy.value

        _ = try await writer.commit(IncomingBatch(agent: "a", sequence: 2, receivedAt: receivedAt, events: [Self.event("3")]))
        let later = try await writer.read { store throws(LedgerError) in
            try store.periodTotals(tenant: "acme", metric: "api_calls", period: march).usage?.count
        }
        #expect(later == 3)
        await writer.shutdown()
    }
}
