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

    /// Puts the calling thread in the idle scheduling class (`SCHED_IDLE`): it runs on what
    /// every other thread leaves, and a thread that wakes takes its core at once, wherever it is
    /// (inside SQLite, say) — where a nice value only shares the core unevenly, and the running
    /// thread keeps it for the rest of its slice. Only for work that nothing waits on and that
    /// has a bound if it starves (the WAL checkpoint: the writer checkpoints itself past four
    /// times the threshold). No privilege needed to enter it; none to leave it is asked for.
    /// Returns whether the kernel took it.
    @discardableResult
    public static func idleCurrentThread() -> Bool {
        tally_thread_enter_idle_class() == 0
    }

    /// Whether the calling thread is in the idle scheduling class (tests and diagnostics).
    public static func currentThreadIsIdleClass() -> Bool {
        tally_thread_is_idle_class() == 1
    }

    /// The calling thread's nice value (for tests and diagnostics).
    public static func currentThreadNiceness() -> Int32 {
        errno = 0
        return getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0)
    }
}
