import Foundation
import Synchronization
import TallyCore
import TallyTestSupport
import Testing

@testable import TallyCollector
@testable import TallyLedger

/// Committed batches are freed on a thread of the idle policy (``IdleDisposal``), so that
/// freeing thousands of allocations never holds a core that a read wakes on; when too many wait
/// there, the caller frees them as before.
@Suite struct IdleDisposalTests {
    /// Where a value was freed: the freeing thread's name and whether it was on `SCHED_IDLE`.
    struct Freed: Sendable, Equatable {
        var thread: String
        var idle: Bool
    }

    /// Where each value was freed, by label.
    final class Places: Sendable {
        private let map = Mutex<[String: Freed]>([:])
        subscript(label: String) -> Freed? {
            get { map.withLock { $0[label] } }
        }
        func record(_ label: String, _ place: Freed) { map.withLock { $0[label] = place } }
    }

    /// Reports where it is freed, and can hold the freeing thread until released.
    final class Tracked: Sendable {
        let label: String
        let seen: Places
        let freed: DispatchSemaphore
        let hold: (started: DispatchSemaphore, release: DispatchSemaphore)?

        init(
            _ label: String, into seen: Places, signalling freed: DispatchSemaphore,
            hold: (started: DispatchSemaphore, release: DispatchSemaphore)? = nil
        ) {
            self.label = label
            self.seen = seen
            self.freed = freed
            self.hold = hold
        }

        deinit {
            let place = Freed(thread: ThreadName.current(), idle: BackgroundPriority.currentThreadIsIdle)
            seen.record(label, place)
            if let hold {
                hold.started.signal()
                hold.release.wait()
            }
            freed.signal()
        }
    }

    /// Runs `body` on a thread of its own, named `test-caller` (it blocks on semaphores).
    func onOwnThread<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { (done: CheckedContinuation<T, Never>) in
            Thread {
                ThreadName.set("test-caller")
                done.resume(returning: body())
            }.start()
        }
    }

    @Test func aValueIsFreedOnTheIdleThreadNotTheCallers() async throws {
        let disposal = IdleDisposal()
        let seen = Places()
        let freed = DispatchSemaphore(value: 0)
        let (inTime, callerIdle) = await onOwnThread {
            disposal.dispose(Tracked("one", into: seen, signalling: freed))
            return (freed.wait(timeout: .now() + 60) == .success, BackgroundPriority.currentThreadIsIdle)
        }
        #expect(inTime, "the value was not freed within a minute")
        #expect(seen["one"] == Freed(thread: "tally-free", idle: true))
        #expect(!callerIdle, "the caller's own thread keeps its policy")
        // Counted after the free: read once the thread has finished its work.
        await disposal.shutdown()
        #expect(disposal.counts == (freed: 1, received: 1))
    }

    /// With `limit` values waiting on the disposal thread (one being freed, held here, and the
    /// rest queued), the next is freed by the caller; once the thread runs again it frees the
    /// queued ones.
    @Test func pastTheLimitTheCallerFreesTheValue() async throws {
        let disposal = IdleDisposal(limit: 2)
        let seen = Places()
        let freed = DispatchSemaphore(value: 0)
        let hold = (started: DispatchSemaphore(value: 0), release: DispatchSemaphore(value: 0))
        let steps = await onOwnThread { () -> [Bool] in
            disposal.dispose(Tracked("held", into: seen, signalling: freed, hold: hold))
            let started = hold.started.wait(timeout: .now() + 60) == .success
            disposal.dispose(Tracked("queued", into: seen, signalling: freed))
            disposal.dispose(Tracked("over", into: seen, signalling: freed))
            // The one over the limit was freed here, before `dispose` returned.
            let overHere = seen["over"] == Freed(thread: "test-caller", idle: false)
            hold.release.signal()
            let rest = (0..<3).allSatisfy { _ in freed.wait(timeout: .now() + 60) == .success }
            return [started, overHere, rest]
        }
        #expect(steps == [true, true, true], "held started / over freed by the caller / all freed: \(steps)")
        #expect(seen["held"] == Freed(thread: "tally-free", idle: true))
        #expect(seen["queued"] == Freed(thread: "tally-free", idle: true))
        await disposal.shutdown()
        #expect(disposal.counts == (freed: 2, received: 3))
    }

    /// Every committed batch goes to the ledger's disposal when its committer has its outcome:
    /// from the single writer's queue (SQLite) and from a pool of writers (PostgreSQL).
    @Test(arguments: ["sqlite", "postgres"])
    func theLedgerHandsEveryCommittedBatchToItsDisposal(backend: String) async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tally-disposal-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let ledger: Ledger
        var cleanup: () -> Void = {}
        if backend == "postgres" {
            guard let server = try await PostgresTestServer.shared() else { return }
            let url = try server.createDatabase("disposal")
            let open = { try PostgresLedgerStore(address: PostgresAddress(parsing: url)) }
            ledger = Ledger(stores: [try open(), try open()])
            cleanup = { if let name = PostgresTestServer.databaseName(in: url) { server.dropDatabase(name) } }
        } else {
            ledger = Ledger(store: try SQLiteLedgerStore(path: directory.appendingPathComponent("ledger.db").path))
        }
        defer { cleanup() }
        #expect(ledger.commitsInQueueOrder == (backend == "sqlite"))
        let receivedAt = try EventTime(parsing: "2026-03-10T10:05:00Z")
        for sequence in 1...5 {
            let event = UsageEvent(
                tenant: "acme", metric: "api_calls", quantity: Quantity(1), timestamp: try EventTime(parsing: "2026-03-10T10:00:00Z"),
                id: "e-\(sequence)", properties: Properties([]))
            let prepared = PreparedBatch(IncomingBatch(agent: "a", sequence: UInt64(sequence), receivedAt: receivedAt, events: [.valid(event)]))
            let outcome = try await ledger.commit(prepared)
            #expect(outcome.accepted == 1)
            #expect(ledger.disposal.counts.received == sequence)
        }
        await ledger.shutdown()
        #expect(ledger.disposal.counts.freed >= 1, "the disposal thread freed none of the five: \(ledger.disposal.counts)")
    }
}
