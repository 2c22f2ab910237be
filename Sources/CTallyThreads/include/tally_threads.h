#ifndef TALLY_THREADS_H
#define TALLY_THREADS_H

#include <stdint.h>

/// Sets the calling thread's fair-scheduler time slice to `nanoseconds` (sched_setattr with
/// sched_runtime, Linux 6.12+), keeping its normal policy and its nice value. 0 on success,
/// else the errno (ENOSYS where there is no such call, EINVAL on older kernels).
int tally_thread_set_slice(uint64_t nanoseconds);

/// The calling thread's time slice in nanoseconds (0: the kernel's default), or -1.
int64_t tally_thread_slice(void);

/// Moves the calling thread to SCHED_IDLE. 0 on success, else the errno.
int tally_thread_enter_idle_class(void);

/// 1 if the calling thread is in SCHED_IDLE, 0 if not, -1 on error.
int tally_thread_is_idle_class(void);

#endif
