import Foundation
import TallyCore
import TallyLedger
import TallyTestSupport
import Testing
@testable import TallyCollector

/// `Ledger.read`: reads answered on a reader connection without waiting for the writer thread,
/// merging the aggregate log the writer has not folded yet.
@Suite struct LedgerReaderTests {
    static func event(_ id: String) -> IncomingEvent {
        .valid(
            UsageEvent(
                tenant: "acme", metric: "api_calls", quantity: Quantity(1),
                timestamp: (try? EventTime(parsing: "2026-03-10T10:00:00Z")) ?? EventTime(microseconds: 0), id: id,
                properties: Properties([])))
    }

    /// On both backends: SQLite's reader merges every read; PostgreSQL's merges the aggregate and
    /// reconciliation reads, and a read of the stored cells goes to a writer.
    @Test(arguments: ["sqlite", "postgres"])
    func readsSeeEveryCommitAndNeverWaitForABusyWriter(backend: String) async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tally-reader-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let open: () throws -> any LedgerStore
        var cleanup: () -> Void = {}
        if backend == "postgres" {
            guard let server = try await PostgresTestServer.shared() else { return }
            let url = try server.createDatabase("reader")
            open = { try PostgresLedgerStore(address: PostgresAddress(parsing: url)) }
            cleanup = { if let name = PostgresTestServer.databaseName(in: url) { server.dropDatabase(name) } }
        } else {
            let path = directory.appendingPathComponent("ledger.db").path
            open = { try SQLiteLedgerStore(path: path) }
        }
        defer { cleanup() }
        let ledger = Ledger(store: try open(), reader: try open())
        // The upkeep's schedule follows: SQLite's readers merge the log and never wait for a
        // fold, so only an idle collector's log is folded by the clock (each minute); where a
        // read may have to ask a writer to fold first (PostgreSQL), every five seconds.
        #expect(ledger.upkeepFoldInterval == (backend == "sqlite" ? .seconds(60) : .seconds(5)))
        // Asks the database itself, not the writer's count of what it logged.
        let probe = try open()
        defer { probe.close() }
        let receivedAt = try EventTime(parsing: "2026-03-10T10:05:00Z")
        let march = try #require(BillingPeriod("2026-03"))
        let unfolded = { () throws -> Bool in try probe.hasUnfoldedAggregates() }

        var sequence: UInt64 = 0
        var expected: Int64 = 0
        // Each round: a batch (its cells stay in the aggregate log), then a read while the writer
        // thread is held — the read must answer, from the reader, and count every batch.
        for round in 0..<4 {
            sequence += 1
            let events = (0...round).map { Self.event("\(sequence)-\($0)") }
            _ = try await ledger.commit(IncomingBatch(agent: "a", sequence: sequence, receivedAt: receivedAt, events: events))
            expected += Int64(events.count)
            #expect(try unfolded(), "the batch's cells wait in the aggregate log")
            let answer = try await readHoldingTheWriter(ledger) { store throws(LedgerError) in
                try store.periodTotals(tenant: "acme", metric: "api_calls", period: march).usage?.count ?? -1
            }
            #expect(answer == .some(.some(expected)), "round \(round): the read waited for the busy writer or missed a batch")
            // On the caller's thread (`readNow`, for the HTTP API's event loop): SQLite's reader
            // answers there, the same; PostgreSQL's waits on the network, so it never does.
            let now = ledger.readNow { store throws(LedgerError) in
                try store.periodTotals(tenant: "acme", metric: "api_calls", period: march).usage?.count ?? -1
            }
            if backend == "postgres" {
                #expect(now == nil, "a PostgreSQL read answered on the caller's thread")
            } else {
                #expect(try now?.get() == expected, "round \(round)")
            }
            #expect(try unfolded(), "a read never folds")
            // The reconciliation too (folded from the log on PostgreSQL, and merged there).
            let received = try await readHoldingTheWriter(ledger) { store throws(LedgerError) in
                try store.reconciliation(ReconciliationFilter()).total.received
            }
            #expect(received == .some(.some(expected)), "round \(round): the reconciliation read waited or missed a batch")
            #expect(try unfolded(), "a read never folds")
            // A read the reader cannot merge (the stored cells, on PostgreSQL) still answers, from a
            // writer, and counts every batch.
            let stored = try await ledger.read { store throws(LedgerError) in
                try store.storedAggregates(tenant: "acme", period: march).values.reduce(0) { $0 + $1.count }
            }
            #expect(stored == expected)
            if round == 1 {
                // A fold empties the log; the next batch's row takes an id the reader saw before.
                try await ledger.perform { store throws(LedgerError) in try store.foldAggregates() }
            }
        }
        await ledger.shutdown()
    }

    /// Runs `read` while the writer thread is held: its answer; `.some(nil)` if it failed; nil
    /// if it did not answer within 20 s (it waited for the writer).
    func readHoldingTheWriter<T: Sendable>(
        _ ledger: Ledger, _ read: @escaping @Sendable (any LedgerStore) throws(LedgerError) -> T
    ) async throws -> T?? {
        let gate = DispatchSemaphore(value: 0)
        let (entered, enteredSink) = AsyncStream.makeStream(of: Void.self)
        let busy = Task {
            try await ledger.perform { _ throws(LedgerError) in
                enteredSink.yield()
                gate.wait()
            }
        }
        for await _ in entered { break }
        let answer = await withTaskGroup(of: T??.self) { group in
            group.addTask { try? await ledger.read(read) }
            group.addTask {
                try? await Task.sleep(for: .seconds(20))  // a timeout, so a missing feature fails instead of hanging
                return nil
            }
            let first = await group.next() ?? nil
            gate.signal()
            group.cancelAll()
            return first
        }
        _ = try await busy.value
        return answer
    }
}
