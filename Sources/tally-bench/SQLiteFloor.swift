import CSQLite
import Foundation
import TallyCore

#if canImport(Glibc)
import Glibc
#endif

/// The SQLite floor beside the collector's writer in `tally-bench ingest`: the same events
/// inserted through the C API with nothing else — one prepared statement, 1,000-event
/// transactions, WAL with `synchronous = FULL` (an fsync per commit, as the ledger does), a
/// `(ts, fingerprint)` key like `raw_events`, and no dedupe, aggregates, reconciliation or
/// batch records. What the ledger's single writer could reach if SQLite were all it did.
enum SQLiteFloor {
    struct Figures {
        var eventsPerSecond: Int
        /// CPU of the inserting thread per event, µs.
        var cpuMicroseconds: Double
    }

    static func measure(_ events: [UsageEvent], path: String) throws -> Figures {
        for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
        var handle: OpaquePointer?
        guard sqlite3_open(path, &handle) == SQLITE_OK, let db = handle else { throw BenchFailure("sqlite floor: cannot open \(path)") }
        defer { sqlite3_close(db) }
        func exec(_ sql: String) throws {
            guard sqlite3_exec(db, sql, nil, nil, nil) == SQLITE_OK else {
                throw BenchFailure("sqlite floor: \(sql): \(String(cString: sqlite3_errmsg(db)))")
            }
        }
        try exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA cache_size = -65536")
        try exec(
            """
            CREATE TABLE raw (ts INTEGER NOT NULL, fingerprint BLOB NOT NULL, tenant TEXT NOT NULL, metric TEXT NOT NULL,
              quantity TEXT NOT NULL, properties BLOB NOT NULL, PRIMARY KEY (ts, fingerprint)) WITHOUT ROWID
            """)
        var statement: OpaquePointer?
        guard sqlite3_prepare_v2(db, "INSERT OR IGNORE INTO raw VALUES (?1, ?2, ?3, ?4, ?5, ?6)", -1, &statement, nil) == SQLITE_OK,
            let insert = statement
        else { throw BenchFailure("sqlite floor: prepare: \(String(cString: sqlite3_errmsg(db)))") }
        defer { sqlite3_finalize(insert) }
        // Rows made before the clock starts, as the collector prepares a batch off the writer.
        var scratch: [UInt8] = []
        let rows = events.map { event in
            (
                event.timestamp.microseconds, Fingerprint(of: event, scratch: &scratch).bytes, event.tenant, event.metric,
                event.quantity.description, Array(event.properties.map { $0.key + "=" + $0.value }.joined(separator: ",").utf8)
            )
        }
        let cpuBefore = cpuNanoseconds(CLOCK_THREAD_CPUTIME_ID)
        let began = ContinuousClock.now
        for start in stride(from: 0, to: rows.count, by: 1_000) {
            try exec("BEGIN")
            for row in rows[start..<min(rows.count, start + 1_000)] {
                sqlite3_bind_int64(insert, 1, row.0)
                _ = row.1.withUnsafeBytes { sqlite3_bind_blob(insert, 2, $0.baseAddress, 16, tally_sqlite_transient()) }
                sqlite3_bind_text(insert, 3, row.2, -1, tally_sqlite_transient())
                sqlite3_bind_text(insert, 4, row.3, -1, tally_sqlite_transient())
                sqlite3_bind_text(insert, 5, row.4, -1, tally_sqlite_transient())
                _ = row.5.withUnsafeBytes { sqlite3_bind_blob(insert, 6, $0.baseAddress, Int32($0.count), tally_sqlite_transient()) }
                guard sqlite3_step(insert) == SQLITE_DONE else { throw BenchFailure("sqlite floor: insert: \(String(cString: sqlite3_errmsg(db)))") }
                sqlite3_reset(insert)
            }
            try exec("COMMIT")
        }
        let elapsed = ContinuousClock.now - began
        let cpu = cpuNanoseconds(CLOCK_THREAD_CPUTIME_ID) - cpuBefore
        for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
        return Figures(
            eventsPerSecond: Int(Double(rows.count) / elapsed.seconds), cpuMicroseconds: Double(cpu) / Double(max(rows.count, 1)) / 1_000)
    }
}
