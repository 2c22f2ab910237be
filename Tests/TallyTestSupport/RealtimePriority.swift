#if canImport(Glibc)
import Glibc
#endif

/// Whether this process may put a thread on a real-time policy at `priority`: as root (with
/// CAP_SYS_NICE), or with an RLIMIT_RTPRIO of at least `priority` (14 on Linux, which Swift does
/// not import).
public func realtimePriorityAllowed(_ priority: Int) -> Bool {
    if getuid() == 0 { return true }
    var limit = rlimit()
    return getrlimit(__rlimit_resource_t(14), &limit) == 0 && limit.rlim_cur >= rlim_t(priority)
}
