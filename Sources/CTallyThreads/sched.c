// sched_setattr / sched_getattr have no glibc wrapper, and Swift cannot call the variadic
// syscall(2): these two functions make the calls for ResponsiveThread (TallyCore).
#define _GNU_SOURCE
#include "tally_threads.h"

#include <errno.h>
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
