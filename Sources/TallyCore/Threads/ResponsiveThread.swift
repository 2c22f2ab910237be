import CTallyThreads

/// Gives the calling thread a short scheduler time slice: for the threads that answer someone
/// (the collector's event loops, which read requests and answer the API's reads on the spot).
///
/// Why (issue 12, reads under full-speed ingest). Linux's fair scheduler (EEVDF, kernel 6.6+)
/// lets a running thread finish its time slice, 1.5 ms on a 2-core machine, before a thread that
/// wakes with an equal claim gets the core; an event loop woken by a request waited behind the
/// drain's threads that long. A thread whose own slice is short (`sched_setattr` with
/// `sched_runtime`, kernel 6.12+; no privilege needed, the nice value is kept) gets an earlier
/// deadline when it wakes, and the running thread's remaining slice is not protected from it
/// (the kernel's PREEMPT_SHORT): it runs at once. It is also preempted sooner itself, which a
/// thread that answers in well under a millisecond and then sleeps does not notice. Measured with
/// `tally-bench agent` (a 2M-event drain, charges every 5 ms, six alternating runs each, the
/// slice set from outside the process): p99 under the drain 2.0–2.7× idle (mean 2.3) with a 100 µs
/// slice on the event loops against 2.3–3.6× (mean 2.9) without, the drain unchanged.
///
/// On older kernels the slice is not known and the call fails: the thread keeps the default.
public enum ResponsiveThread {
    /// The slice asked for: the shortest the kernel accepts.
    public static let sliceNanoseconds: UInt64 = 100_000

    /// Sets the calling thread's slice to ``sliceNanoseconds``, keeping its policy (normal) and
    /// nice value. Returns whether the kernel took it.
    @discardableResult
    public static func shortenSlice() -> Bool {
        tally_thread_set_slice(sliceNanoseconds) == 0
    }

    /// The calling thread's slice in nanoseconds (0: the kernel's default), nil if the kernel
    /// does not say (tests and diagnostics).
    public static func currentSlice() -> UInt64? {
        let slice = tally_thread_slice()
        return slice < 0 ? nil : UInt64(slice)
    }
}
