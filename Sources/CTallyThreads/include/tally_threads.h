#ifndef TALLY_THREADS_H
#define TALLY_THREADS_H

#include <stdint.h>

/// Sets the calling thread's fair-scheduler time slice to `nanoseconds` (sched_setattr with
/// sched_runtime, Linux 6.12+), keeping its normal policy and its nice value. 0 on success,
/// else the errno (ENOSYS where there is no such call, EINVAL on older kernels).
int tally_thread_set_slice(uint64_t nanoseconds);

/// The calling thread's time slice in nanoseconds (0: the kernel's default), or -1.
int64_t tally_thread_slice(void);

/// Puts the calling thread on the round-robin real-time policy (SCHED_RR) at `priority`, with
/// SCHED_RESET_ON_FORK (threads and processes it starts begin on the normal policy). 0 on
/// success, else the errno (EPERM without CAP_SYS_NICE or an RLIMIT_RTPRIO of at least
/// `priority`).
int tally_thread_set_realtime(int priority);

/// The calling thread's policy (SCHED_OTHER 0, SCHED_RR 2, ...; the reset-on-fork flag cleared)
/// and its real-time priority in `priority`, or -1.
int tally_thread_policy(int *priority);

/// Puts the calling thread on the idle policy (SCHED_IDLE): it runs only on a core that nothing
/// else wants, and any thread that wakes on its core preempts it at once. 0 on success, else the
/// errno.
int tally_thread_set_idle(void);

/// 1 if the calling thread is on the idle policy, else 0.
int tally_thread_is_idle(void);

#endif
