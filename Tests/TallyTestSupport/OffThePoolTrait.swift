import Foundation
import TallyCore

// TallyTestSupport is also a dependency of tally-bench, which `make build-release` builds without
// the test products: there the Testing module is not on the search path, and the trait (of use
// to tests only) is left out.
#if canImport(Testing)
import Testing

/// `.offThePool` on a suite (or a test): its tests' bodies run on threads of their own
/// (``DedicatedThreads``), not on Swift's cooperative pool.
///
/// The pool has one thread per core: two on the CI machine, for every test of the run and every
/// in-process agent and collector they start. A test that computes for seconds on it (thousands
/// of random events through two ledgers, a corpus replayed) runs each of its turns to the end,
/// and while two such tests run, nothing else does: a profile of the first 80 s of `make test`
/// found the pool busy with a handful of them, trivial tests finishing after 67 s, and the tests
/// bounded by time (a handshake in 10 s, a webhook in 30 s) failing in CI. On threads of their
/// own they take the same CPU, shared by the kernel in slices of milliseconds, and the pool
/// stays free for the work that waits on it.
///
/// Child tasks of such a test (`async let`, task groups) run on those threads too; unstructured
/// tasks (`Task { }`) and the servers a test starts stay on the pool.
public struct OffThePoolTrait: SuiteTrait, TestTrait, TestScoping {
    public var isRecursive: Bool { true }

    public func provideScope(
        for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void
    ) async throws {
        try await withTaskExecutorPreference(DedicatedThreads.shared) { try await function() }
    }
}

extension Trait where Self == OffThePoolTrait {
    /// Runs the tests' bodies on threads of their own: for tests that compute for seconds.
    public static var offThePool: Self { Self() }
}
#endif

/// A task executor with two threads of its own at the background nice value
/// (`BackgroundPriority`, 10), for ``OffThePoolTrait``.
///
/// The tests marked `.offThePool` compute for a minute of CPU between them at the start of a
/// run, while the tests bounded by time start their agents and collectors. At nice 10 a thread
/// weighs 110 against 1024 for one at nice 0: these threads get a core when the rest of the run
/// leaves it idle, and little of it otherwise. (Eight threads at nice 0 were tried: the
/// computing tests then took three quarters of the CPU for a minute, and in-process agents
/// missed their deadlines.)
public final class DedicatedThreads: TaskExecutor, @unchecked Sendable {
    public static let shared = DedicatedThreads(count: 2)

    private let condition = NSCondition()
    // Guarded by `condition`.
    private var jobs: [UnownedJob] = []

    init(count: Int) {
        for index in 0..<count {
            Thread { [self] in
                BackgroundPriority.lowerCurrentThread()
                ThreadName.set("test-off-pool-\(index)")
                run()
            }.start()
        }
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        condition.lock()
        jobs.append(job)
        condition.signal()
        condition.unlock()
    }

    private func run() {
        while true {
            condition.lock()
            while jobs.isEmpty { condition.wait() }
            let job = jobs.removeFirst()
            condition.unlock()
            job.runSynchronously(on: asUnownedTaskExecutor())
        }
    }
}
