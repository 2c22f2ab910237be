import Glibc

/// Where long CPU work on the collector's bulk threads (the ledger writer, batch preparation)
/// lets a thread that is waiting for the core run first.
///
/// Why (issue 12: reads under ingest). Timed per call during a full-speed drain, a slow charges
/// read used 0.6–0.9 ms of CPU and spent 5–7 ms runnable but not running. `perf sched` showed
/// where: the read's thread had woken on a core where the writer or a preparation thread was
/// running, and that thread ran on to the next scheduler tick, up to 4 ms away at 250 Hz; a
/// kernel without forced preemption does not stop it for the thread that woke, and lowering the
/// bulk threads' priority (nice 10, `BulkWork`), a shorter time slice or `SCHED_IDLE` did not
/// change that. A yield does: the kernel picks the waiting thread, if there is one, and returns
/// at once otherwise (one system call, well under a microsecond).
///
/// Measured with `tally-bench agent` (a 2M-event drain, charges read every 5 ms, the same binary
/// with and without the yields, four alternating runs each): p99 under the drain 3.98–4.32 ms
/// against 5.59–7.38 ms; drain 72,100–83,500 events/s against 56,000–71,700.
public enum YieldPoint {
    /// Yields after every `every`th step of a loop (`step` counts from 0): 128 raw events take
    /// about 0.3 ms of the writer's time.
    @inline(__always)
    public static func after(step: Int, every: Int) {
        if step % every == every - 1 { sched_yield() }
    }

    /// Yields between two stages of a long piece of work.
    @inline(__always)
    public static func between() { sched_yield() }
}
