import CTallyThreads
import Glibc

/// Lowers the scheduling priority of the calling thread, for work that can wait: the
/// collector's batch preparation and commits, the agent's batch encoding. On a busy machine the
/// kernel then gives the threads that answer someone — the collector's reads, the API server
/// beside an agent, the agent's own ingest — the core they need at once, instead of sharing it
/// evenly with the bulk work. Nothing is lost when nothing competes: priority only decides who
/// waits when threads want the same core.
public enum BackgroundPriority {
    /// The nice value of background threads (the others keep the process's own).
    public static let niceness: Int32 = 10

    /// Lowers the calling thread's priority to ``niceness``. Linux keeps a nice value per thread,
    /// and `PRIO_PROCESS` with id 0 sets the calling thread's; lowering one's own needs no
    /// privilege. One system call, cheaper than remembering per thread; a failure (a seccomp
    /// filter) leaves the thread as it was.
    public static func lowerCurrentThread() {
        _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, niceness)
    }

    /// The calling thread's nice value (for tests and diagnostics).
    public static func currentThreadNiceness() -> Int32 {
        errno = 0
        return getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0)
    }

    /// Puts the calling thread on the idle scheduling policy (`SCHED_IDLE`), for work that has
    /// no one waiting on it at all, such as freeing what was committed (`IdleDisposal` in the
    /// collector): it runs on a core nothing else wants, and every thread that wakes on its core,
    /// whatever its nice value, takes the core from it at once. Returns whether the kernel took
    /// it (a seccomp filter may refuse).
    @discardableResult
    public static func idleCurrentThread() -> Bool { tally_thread_set_idle() == 0 }

    /// Whether the calling thread is on the idle policy (for tests).
    public static var currentThreadIsIdle: Bool { tally_thread_is_idle() == 1 }
}
