import NIOPosix
import Synchronization
import TallyCore

/// Frees values on a thread of its own, on the idle scheduling policy: the collector's committed
/// batches (``Ledger``).
///
/// Why (issue 12, reads under ingest). A committed batch is thousands of allocations (its
/// events, their properties, the cells speculated for it): freeing one of 4,000 events takes
/// about half a millisecond in one go. Freed by the task that awaited its commit, it ran on
/// Swift's cooperative pool at the process's priority, without a yield, and `perf sched`
/// during a drain found the charges client's thread waiting for a core behind those frees more
/// than behind any other thread of the collector. On `SCHED_IDLE`
/// (``BackgroundPriority/idleCurrentThread()``) the frees run on a core that nothing else wants,
/// and any thread that wakes on that core takes it at once. Measured with `tally-bench agent`
/// (3M-event drains, three alternating pairs): charges p99 during the drain 1.44 / 1.13 / 1.26 ms
/// against 1.70 / 1.70 / 2.08, the drain 192,367–201,557 events/s against 185,218–197,629.
///
/// Bounded: when ``limit`` values are waiting already (a machine so busy that an idle thread
/// does not run), the caller frees the value itself, as before, so memory does not grow with
/// them.
final class IdleDisposal: Sendable {
    /// Values handed over and not yet freed, at most.
    let limit: Int

    private let thread: NIOThreadPool
    private let waiting = Atomic<Int>(0)
    private let freed = Atomic<Int>(0)
    private let received = Atomic<Int>(0)

    init(limit: Int = 4) {
        self.limit = limit
        thread = NIOThreadPool(numberOfThreads: 1)
        thread.start()
    }

    /// Frees `value` on the disposal thread, or here if ``limit`` values are waiting there.
    /// Hand over the last reference (`consume`): a copy kept by the caller would be freed by the
    /// caller.
    func dispose<Value: Sendable>(_ value: consuming Value) {
        received.add(1, ordering: .relaxed)
        guard waiting.add(1, ordering: .relaxed).newValue <= limit else {
            waiting.subtract(1, ordering: .relaxed)
            return
        }
        let handOff = HandOff(consume value)
        thread.submit { [self] _ in
            // Once per value: one system call, against thousands of frees.
            BackgroundPriority.idleCurrentThread()
            ThreadName.set("tally-free")
            _ = handOff.take()
            freed.add(1, ordering: .relaxed)
            waiting.subtract(1, ordering: .relaxed)
        }
    }

    /// Values freed on the disposal thread so far, and values handed to ``dispose(_:)`` (for
    /// tests and diagnostics).
    var counts: (freed: Int, received: Int) { (freed.load(ordering: .relaxed), received.load(ordering: .relaxed)) }

    /// Frees what is waiting, then stops the thread.
    func shutdown() async { try? await thread.shutdownGracefully() }
}
