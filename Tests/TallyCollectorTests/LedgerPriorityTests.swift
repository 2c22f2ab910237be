import Foundation
import NIOCore
import NIOPosix
import Synchronization
import TallyCore
import TallyTestSupport
import Testing

@testable import TallyCollector
@testable import TallyLedger

/// The preparation threads run at background priority, so that reads get a core first; the
/// ledger writer, which the end-to-end rate waits on, keeps the process's own (see `BulkWork`).
@Suite struct LedgerPriorityTests {
    /// A thread's name is what the kernel shows for it, cut to 15 bytes; the caller's other
    /// threads keep theirs.
    @Test func threadNamesAreSetOnTheCallingThreadOnly() async throws {
        let callerName = ThreadName.current()
        let seen = await withCheckedContinuation { (done: CheckedContinuation<(String, String), Never>) in
            Thread {
                ThreadName.set("tally-a-very-long-thread-name")
                let comm = (try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8)) ?? ""
                done.resume(returning: (ThreadName.current(), comm.trimmingCharacters(in: .whitespacesAndNewlines)))
            }.start()
        }
        #expect(seen.0 == "tally-a-very-lo")
        #expect(seen.1 == seen.0)
        #expect(ThreadName.current() == callerName)
    }

    /// A thread remembers the name it was given, so naming it again each batch costs nothing,
    /// and a thread given another name takes it.
    @Test func aThreadNamedAgainTakesTheNewName() async {
        let seen = await withCheckedContinuation { (done: CheckedContinuation<[String], Never>) in
            Thread {
                var names: [String] = []
                for name in ["tally-one", "tally-one", "tally-two", "tally-one"] {
                    ThreadName.set(name)
                    names.append(ThreadName.current())
                }
                done.resume(returning: names)
            }.start()
        }
        #expect(seen == ["tally-one", "tally-one", "tally-two", "tally-one"])
    }

    @Test func preparationYieldsTheCoreAndTheWriterDoesNot() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tally-priority-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let own = BackgroundPriority.currentThreadNiceness()
        let ledger = Ledger(store: try SQLiteLedgerStore(path: directory.appendingPathComponent("ledger.db").path))
        let receivedAt = try EventTime(parsing: "2026-03-10T10:05:00Z")
        for sequence in 1...3 {
            let event = UsageEvent(
                tenant: "acme", metric: "api_calls", quantity: Quantity(1), timestamp: try EventTime(parsing: "2026-03-10T10:00:00Z"),
                id: "e-\(sequence)", properties: Properties([]))
            let prepared = try await ledger.prepare {
                PreparedBatch(IncomingBatch(agent: "a", sequence: UInt64(sequence), receivedAt: receivedAt, events: [.valid(event)]))
            }
            _ = try await ledger.commit(prepared)
        }
        let preparation = try await ledger.prepare { BackgroundPriority.currentThreadNiceness() }
        let writer = try await ledger.perform { _ throws(LedgerError) in BackgroundPriority.currentThreadNiceness() }
        #expect(preparation >= BackgroundPriority.niceness)
        #expect(writer == own, "the writer thread keeps the process's priority after commits")
        // Named for `top -H` and perf: NIO calls every pool's threads "TP-#n".
        #expect(try await ledger.prepare { ThreadName.current() } == "tally-prepare")
        #expect(try await ledger.perform { _ throws(LedgerError) in ThreadName.current() } == "tally-writer")
        let names = threadNamesOfThisProcess()
        #expect(names.contains("tally-writer") && names.contains("tally-prepare"), "\(names)")
        await ledger.shutdown()
    }

    /// The collector's SQLite writer leaves the log's checkpoints to a thread of its own
    /// (``WALCheckpointer``), stopped when the ledger shuts down.
    @Test func theWriterLeavesCheckpointsToTheirOwnThread() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tally-checkpoint-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try SQLiteLedgerStore(path: directory.appendingPathComponent("ledger.db").path)
        #expect(store.checkpointer == nil)
        let ledger = Ledger(store: store)
        let checkpointer = try #require(store.checkpointer)
        #expect(checkpointer.threshold == SQLiteSchema.checkpointPages)
        await ledger.shutdown()
        #expect(checkpointer.isStopped)
    }

    /// A thread given a short slice (``ResponsiveThread``) has it, keeps its nice value, and the
    /// process's other threads keep the kernel's default.
    @Test func aShortSliceIsTheCallingThreadsOnly() async throws {
        let callerSlice = ResponsiveThread.currentSlice()
        let seen = await withCheckedContinuation { (done: CheckedContinuation<(Bool, UInt64?, Int32), Never>) in
            Thread {
                BackgroundPriority.lowerCurrentThread()
                let taken = ResponsiveThread.shortenSlice()
                done.resume(returning: (taken, ResponsiveThread.currentSlice(), BackgroundPriority.currentThreadNiceness()))
            }.start()
        }
        #expect(seen.0, "sched_setattr refused the slice")
        #expect(seen.1 == ResponsiveThread.sliceNanoseconds)
        #expect(seen.2 == BackgroundPriority.niceness)
        #expect(ResponsiveThread.currentSlice() == callerSlice)
    }

    /// A thread put on the real-time policy (``ResponsiveThread/makeRealtime(priority:)``) has
    /// it at that priority, and a thread it starts begins on the normal policy
    /// (`SCHED_RESET_ON_FORK`). Without the right (not root, RLIMIT_RTPRIO 0) the call fails
    /// with EPERM and the thread keeps the normal policy.
    @Test func theRealtimePolicyIsTheCallingThreadsAndNotItsChildrens() async throws {
        let seen = await withCheckedContinuation {
            (done: CheckedContinuation<(refused: Int32?, own: (Int32, Int32)?, child: (Int32, Int32)?), Never>) in
            Thread {
                let refused = ResponsiveThread.makeRealtime(priority: 3)
                let own = ResponsiveThread.currentPolicy()
                let child = Mutex<(Int32, Int32)?>(nil)
                let childDone = DispatchSemaphore(value: 0)
                Thread {
                    child.withLock { $0 = ResponsiveThread.currentPolicy().map { ($0.policy, $0.priority) } }
                    childDone.signal()
                }.start()
                childDone.wait()
                done.resume(returning: (refused, own.map { ($0.policy, $0.priority) }, child.withLock { $0 }))
            }.start()
        }
        if realtimePriorityAllowed(3) {
            #expect(seen.refused == nil)
            #expect(seen.own?.0 == SCHED_RR && seen.own?.1 == 3, "SCHED_RR 3, got \(String(describing: seen.own))")
        } else {
            #expect(seen.refused == EPERM)
            #expect(seen.own?.0 == SCHED_OTHER, "\(String(describing: seen.own))")
        }
        #expect(seen.child?.0 == SCHED_OTHER && seen.child?.1 == 0, "a child on the normal policy, got \(String(describing: seen.child))")
        #expect(ResponsiveThread.currentPolicy()?.policy == SCHED_OTHER, "the test's own thread is untouched")
    }

    /// A running collector's event loops (which answer the API's reads) have the short slice.
    @Test func theCollectorsEventLoopsHaveAShortSlice() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tally-slice-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let config = try CollectorConfig.load(
            yaml: "store: sqlite:\(directory.path)/ledger.db\nlisten: 127.0.0.1:0\nhttp: 127.0.0.1:0\n")
        let (running, _) = try await startCollector(config)
        func slices() async throws -> [UInt64?] {
            var slices: [UInt64?] = []
            for loop in MultiThreadedEventLoopGroup.singleton.makeIterator() {
                slices.append(try await loop.submit { ResponsiveThread.currentSlice() }.get())
            }
            return slices
        }
        let set = try await eventually(.seconds(30)) { try await slices().allSatisfy { $0 == ResponsiveThread.sliceNanoseconds } }
        let final = try await slices()
        #expect(set, "\(final)")
        running.cancel()
        _ = await running.result
    }
}
