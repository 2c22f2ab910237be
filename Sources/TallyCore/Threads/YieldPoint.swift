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
///
/// A preparation stage (decoding, validating, fingerprinting, speculating a batch of 1,000) still
/// ran ~1 ms between two yields, and `perf sched` during a drain still found the reads' threads
/// waiting behind them; so the loops of each stage and the writer's insert loop yield every 64
/// events (~0.1 ms): p99 under a drain 2.3–2.5 ms against 3.1–3.2 (2M events, alternating runs),
/// and the drain no slower (119,274 / 119,391 events/s against 96,285 / 111,031).
///
/// Batches of 4,000 events later made some steps without a yield long again. Traced during a
/// 3M drain (`perf record -e syscalls:sys_enter_sched_yield -e sched:sched_switch`, the time a
/// thread ran from one yield to its next yield or switch): merging committed batches into the
/// log's mirror ran up to 4.5 ms, the speculation's classification, log encoding and plan up to
/// 3 ms, and the writer's plan and commit up to 6 ms. They yield now (the mirror's merge every
/// 256 cells, the others between their steps): in five 3M drains against seven, alternating,
/// charges p99 under the drain 0.96–1.19 ms against 0.98–2.07 (mean 1.07 against 1.39), the
/// drain within noise (178–194k events/s against 170–202k).
public enum YieldPoint {
    /// Yields after every `every`th step of a loop (`step` counts from 0): 64 events are about
    /// 0.1 ms of a preparation stage or of the writer's inserts.
    @inline(__always)
    public static func after(step: Int, every: Int) {
        if step % every == every - 1 { sched_yield() }
    }

    /// Yields between two stages of a long piece of work.
    @inline(__always)
    public static func between() { sched_yield() }
}
