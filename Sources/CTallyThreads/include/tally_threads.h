#ifndef TALLY_THREADS_H
#define TALLY_THREADS_H

#include <stdint.h>

/// Sets the calling thread's fair-scheduler time slice to `nanoseconds` (sched_setattr with
/// sched_runtime, Linux 6.12+), keeping its normal policy and its nice value. 0 on success,
/// else the errno (ENOSYS where there is no such call, EINVAL on older kernels).
int tally_thread_set_slice(uint64_t nanoseconds);

/// The calling thread's time slice in nanoseconds (0: the kernel's default), or -1.
int64_t tally_thread_slice(void);

#endif
