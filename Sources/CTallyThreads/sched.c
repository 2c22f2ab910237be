// sched_setattr / sched_getattr have no glibc wrapper, and Swift cannot call the variadic
// syscall(2): these functions make the calls for ResponsiveThread (TallyCore). The real-time
// ones are here too, for SCHED_RESET_ON_FORK, which Swift does not import.
#define _GNU_SOURCE
#include "tally_threads.h"

#include <errno.h>
#include <sched.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

// include/uapi/linux/sched/types.h, SCHED_ATTR_SIZE_VER1 (declared here: the kernel headers'
// copy is not on every build machine).
struct tally_sched_attr {
    uint32_t size;
    uint32_t sched_policy;
    uint64_t sched_flags;
    int32_t sched_nice;
    uint32_t sched_priority;
    uint64_t sched_runtime;
    uint64_t sched_deadline;
    uint64_t sched_period;
    uint32_t sched_util_min;
    uint32_t sched_util_max;
};

int tally_thread_set_slice(uint64_t nanoseconds) {
#if defined(SYS_sched_setattr)
    errno = 0;
    int nice = getpriority(PRIO_PROCESS, 0);
    if (errno != 0) return errno;
    struct tally_sched_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.size = sizeof attr;
    attr.sched_policy = 0;  // SCHED_OTHER
    attr.sched_nice = nice;
    attr.sched_runtime = nanoseconds;
    return syscall(SYS_sched_setattr, 0, &attr, 0) == 0 ? 0 : errno;
#else
    (void)nanoseconds;
    return ENOSYS;
#endif
}

int64_t tally_thread_slice(void) {
#if defined(SYS_sched_getattr)
    struct tally_sched_attr attr;
    memset(&attr, 0, sizeof attr);
    if (syscall(SYS_sched_getattr, 0, &attr, (unsigned)sizeof attr, 0) != 0) return -1;
    return (int64_t)attr.sched_runtime;
#else
    return -1;
#endif
}

int tally_thread_set_realtime(int priority) {
    struct sched_param param;
    memset(&param, 0, sizeof param);
    param.sched_priority = priority;
    // Pid 0 is the calling thread. Threads and processes it starts begin on the normal policy.
    return sched_setscheduler(0, SCHED_RR | SCHED_RESET_ON_FORK, &param) == 0 ? 0 : errno;
}

int tally_thread_policy(int *priority) {
    struct sched_param param;
    memset(&param, 0, sizeof param);
    int policy = sched_getscheduler(0);
    if (policy < 0 || sched_getparam(0, &param) != 0) return -1;
    *priority = param.sched_priority;
    return policy & ~SCHED_RESET_ON_FORK;
}

int tally_thread_set_idle(void) {
    struct sched_param param;
    memset(&param, 0, sizeof param);
    // Pid 0 is the calling thread. Lowering a thread's policy needs no privilege.
    return sched_setscheduler(0, SCHED_IDLE, &param) == 0 ? 0 : errno;
}

int tally_thread_is_idle(void) { return (sched_getscheduler(0) & ~SCHED_RESET_ON_FORK) == SCHED_IDLE; }
