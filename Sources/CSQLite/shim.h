#ifndef TALLY_CSQLITE_SHIM_H
#define TALLY_CSQLITE_SHIM_H
#include <sqlite3.h>

/// SQLITE_TRANSIENT is a cast macro that Swift cannot import: SQLite copies the bound bytes.
static inline sqlite3_destructor_type tally_sqlite_transient(void) { return SQLITE_TRANSIENT; }

/// Turns SQLite's memory statistics off. With them on (the default), every allocation and free
/// takes one process-wide mutex: about 4% of the whole ingest process's CPU was
/// pthread_mutex_lock/unlock. Tally never asks for sqlite3_memory_used(). It must run before
/// SQLite initialises (before the first connection opens); later it returns SQLITE_MISUSE and
/// changes nothing.
static inline int tally_sqlite_configure(void) { return sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0); }
#endif
