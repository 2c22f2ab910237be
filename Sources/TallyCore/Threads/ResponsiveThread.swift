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
///
/// **Real-time priority, where the system allows it** (``makeRealtime(priority:)``). The short
/// slice shortens the wait for a core; it does not end it. Timed inside the collector per read
/// during a 3M-event drain (wall time and the thread's own CPU time of each direct read, with
/// its context switches), the slowest 1% of charges reads took 2.2 ms of wall time for 0.64 ms
/// of CPU: each had been preempted 1.5 times on average (involuntary switches) by the drain's
/// threads and waited to run again. The same reads idle: 0.73 ms for 0.69 ms of CPU. On the
/// round-robin real-time policy at priority 1 no thread of the normal policy preempts the
/// event loop: in the same drain the slowest 1% took 0.87 ms for 0.85 ms of CPU (0.02
/// switches), in-collector p99 0.74 ms against 0.51 idle. It needs CAP_SYS_NICE or an
/// RLIMIT_RTPRIO of at least the priority (systemd's `LimitRTPRIO=1`, which the shipped unit
/// sets); without either the call fails and the thread keeps its short slice.
public enum ResponsiveThread {
    /// The slice asked for: the shortest the kernel accepts.
    public static let sliceNanoseconds: UInt64 = 100_000

    /// Sets the calling thread's slice to ``sliceNanoseconds``, keeping its policy (normal) and
    /// nice value. Returns whether the kernel took it.
    @discardableResult
    public static func shortenSlice() -> Bool {
        tally_thread_set_slice(sliceNanoseconds) == 0
    }

    /// Puts the calling thread on the round-robin real-time policy (`SCHED_RR`) at `priority`
    /// (1–99), with `SCHED_RESET_ON_FORK`: threads and processes it starts begin on the normal
    /// policy. Returns nil when the kernel took it, else the errno (`EPERM` without
    /// CAP_SYS_NICE or an RLIMIT_RTPRIO of at least `priority`).
    public static func makeRealtime(priority: Int32) -> Int32? {
        let error = tally_thread_set_realtime(priority)
        return error == 0 ? nil : error
    }

    /// The calling thread's scheduling policy (`SCHED_OTHER` 0, `SCHED_RR` 2, ...) and
    /// real-time priority, nil if the kernel does not say (tests and diagnostics).
    public static func currentPolicy() -> (policy: Int32, priority: Int32)? {
        var priority: Int32 = 0
        let policy = tally_thread_policy(&priority)
        return policy < 0 ? nil : (policy, priority)
    }

    /// The calling thread's slice in nanoseconds (0: the kernel's default), nil if the kernel
    /// does not say (tests and diagnostics).
    public static func currentSlice() -> UInt64? {
        let slice = tally_thread_slice()
        return slice < 0 ? nil : UInt64(slice)
    }
}
