import CSQLite
import TallyCore

/// The embedded ledger's schema (version 1).
///
/// Key order is the design: SQLite on this machine does ~730k events/s when the large b-trees are
/// keyed by event time first, but ~46k/s with a random-fingerprint-first key once the index
/// outgrows the cache. So:
/// - `raw_events` is keyed `(ts, fingerprint)`: it is the audit ledger and the dedupe index at
///   once (the event time is part of the fingerprint's natural key, so this key dedupes
///   exactly). Inserts land near the time-ordered tail; lookups for retries too.
/// - `duplicate_events`, `refused_events` and `batches` are keyed `(agent, batch_seq, ...)`: batch
///   sequences grow with time per agent, so each agent appends at one tail.
/// - `usage_hourly` is keyed `(tenant, metric, hour, ...)`: each (tenant, metric) appends at its
///   own time-ordered tail, so the hot set is one page per active (tenant, metric), and a tenant's
///   month is one contiguous range (the usage query reads ~720 rows, not millions).
/// Quantities are exact decimal text (`Quantity.description`), never REAL; sums are done by the
/// `tally_sum` SQL function in 128-bit integers, which fails the statement on overflow.
/// - `usage_daily` and `usage_monthly` are the same cells rolled up, written by the same
///   transaction that writes the hourly ones, so that month-to-date reads touch one row per group.
/// - `aggregate_log` is the aggregate buffer's durable half: each batch's transaction appends its
///   cells as one blob (one sequential write instead of thousands of scattered upserts); a later
///   transaction folds the log into the three tables and empties it (`SQLiteLedgerStore`).
///
/// Version 2 added the rollups and the log; a version-1 file is migrated when it is opened.
/// Version 3 writes log rows sectioned by tenant and counts folds in `ledger_meta`
/// (`fold_generation`, which the collector's readers rely on: see `UnfoldedLog`). Its tables are
/// version 2's, so a version-2 file is only relabelled; the new number makes an older Tally
/// refuse the file, since a fold by it would not count itself and readers would keep cells it
/// had folded.
/// Version 4 adds `min` to the three aggregate tables (issue 15): the smallest quantity, NULL
/// for a cell written before (its minimum was not recorded; see `UsageAggregate.min`). The
/// column is added when an older file is opened, before any statement uses it; the new number
/// makes an older Tally, whose upserts would leave `min` stale, refuse the file.
/// Version 5 adds `level_delta` and `level_time` to the three aggregate tables, '0' in every
/// existing row, and the `levels` table (both for `weighted_sum` metrics: see `Levels`); the new
/// number makes an older Tally, whose upserts would drop level changes, refuse the file.
/// Version 6 writes log rows in the compact layout (`AggregateLogCodec`: varints instead of
/// fixed-width numbers, about half the bytes). Its tables are version 5's, so a version-5 file is
/// only relabelled (its unfolded rows still decode); the new number makes an older Tally, which
/// cannot decode the new rows, refuse the file.
/// Version 7 adds `aggregate_log.reconciliation`: a batch's reconciliation counts travel through
/// the log (`ReconciliationLogCodec`, as on PostgreSQL) and the fold sums them into
/// `reconciliation`, instead of one upsert per (period, tenant) of every batch. The batch's
/// transaction still inserts a zero row for a (period, tenant, agent) the table lacks, so which
/// tenants a period has is read from the table alone. The column is added when an older file is
/// opened (NULL in its rows, whose counts are in the table already); the new number makes an
/// older Tally, whose fold would drop the logged counts, refuse the file.
enum SQLiteSchema {
    static let version = "7"

    /// Log pages (4 KiB each) after which the log is copied back into the database file: by the
    /// writer's commit (SQLite's auto-checkpoint) or, in the collector, by a thread of its own
    /// (``WALCheckpointer``).
    static let checkpointPages: Int32 = 16_384

    /// WAL with a commit-time fsync (`synchronous = FULL`): an acked batch survives power loss.
    /// A large auto-checkpoint (64 MiB of WAL) lets hot aggregate pages, rewritten by many
    /// commits, reach the database file once per checkpoint rather than once per commit.
    ///
    /// `secure_delete = FAST`: deleted content is zeroed only where that costs no extra write.
    /// Debian builds SQLite with `SQLITE_SECURE_DELETE` (on; SQLite's own default is off), and
    /// then a fold's delete of the folded log rows zeroed every page of their blobs: each one a
    /// page written to the WAL, fsynced, and copied to the database file by the next checkpoint.
    /// In a 10M-event drain (`tally-bench agent --backlog 10000000 --read-interval-us 0`, two
    /// folds each, two alternating pairs) a fold held the writer 1.6–2.5 s, 0.5–1.0 s of it in
    /// that delete and 0.6–0.8 s in the commit after it; with `FAST`, 0.73–0.94 s in all (delete
    /// 0.12–0.15 s, commit 0.03 s), and the drain ran at 195,208 / 211,964 events/s against
    /// 187,196 / 191,707. What the ledger deletes is only the folded log
    /// (its cells are in the aggregate tables) and batch records past the dedupe horizon (their
    /// counts stay in `reconciliation`), all of it still in the same file, so zeroing it
    /// protects nothing.
    static let pragmas = """
        PRAGMA journal_mode = WAL;
        PRAGMA synchronous = FULL;
        PRAGMA wal_autocheckpoint = \(checkpointPages);
        PRAGMA cache_size = -65536;
        PRAGMA temp_store = MEMORY;
        PRAGMA busy_timeout = 5000;
        PRAGMA secure_delete = FAST;
        """

    static let tables = """
        CREATE TABLE IF NOT EXISTS ledger_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;

        CREATE TABLE IF NOT EXISTS raw_events (
            ts INTEGER NOT NULL,
            fingerprint BLOB NOT NULL,
            tenant TEXT NOT NULL,
            metric TEXT NOT NULL,
            quantity TEXT NOT NULL,
            event_id TEXT,
            properties BLOB NOT NULL,
            status TEXT NOT NULL,
            billed_in TEXT,
            agent TEXT NOT NULL,
            batch_seq INTEGER NOT NULL,
            batch_index INTEGER NOT NULL,
            received_at INTEGER NOT NULL,
            PRIMARY KEY (ts, fingerprint)
        ) WITHOUT ROWID;

        CREATE TABLE IF NOT EXISTS duplicate_events (
            agent TEXT NOT NULL,
            batch_seq INTEGER NOT NULL,
            batch_index INTEGER NOT NULL,
            ts INTEGER NOT NULL,
            fingerprint BLOB NOT NULL,
            tenant TEXT NOT NULL,
            metric TEXT NOT NULL,
            quantity TEXT NOT NULL,
            received_at INTEGER NOT NULL,
            PRIMARY KEY (agent, batch_seq, batch_index)
        ) WITHOUT ROWID;
        -- A trace finds an event's later copies by its key. Duplicates are about 1% of events,
        -- and their keys grow with time, so this costs ingest next to nothing.
        CREATE INDEX IF NOT EXISTS duplicate_events_key ON duplicate_events (ts, fingerprint);

        CREATE TABLE IF NOT EXISTS refused_events (
            agent TEXT NOT NULL,
            batch_seq INTEGER NOT NULL,
            batch_index INTEGER NOT NULL,
            reason TEXT NOT NULL,
            field TEXT,
            message TEXT NOT NULL,
            tenant TEXT,
            metric TEXT,
            ts INTEGER,
            fingerprint BLOB,
            quantity TEXT,
            event_id TEXT,
            properties BLOB,
            source TEXT,
            received_at INTEGER NOT NULL,
            PRIMARY KEY (agent, batch_seq, batch_index)
        ) WITHOUT ROWID;

        CREATE TABLE IF NOT EXISTS batches (
            agent TEXT NOT NULL,
            seq INTEGER NOT NULL,
            received_at INTEGER NOT NULL,
            accepted INTEGER NOT NULL,
            duplicate INTEGER NOT NULL,
            late INTEGER NOT NULL,
            adjusted INTEGER NOT NULL,
            rejected INTEGER NOT NULL,
            rejections TEXT NOT NULL,
            -- What the batch contained (PreparedBatch.contentDigest): a resend must match it.
            digest BLOB NOT NULL,
            PRIMARY KEY (agent, seq)
        ) WITHOUT ROWID;

        CREATE TABLE IF NOT EXISTS pruned_batches (
            agent TEXT PRIMARY KEY,
            through_seq INTEGER NOT NULL
        ) WITHOUT ROWID;

        \(aggregateTable("usage_hourly"))
        \(aggregateTable("usage_daily"))
        \(aggregateTable("usage_monthly"))
        CREATE INDEX IF NOT EXISTS usage_hourly_adjustments
            ON usage_hourly (tenant, metric, billed_in) WHERE billed_in <> '';

        CREATE TABLE IF NOT EXISTS unique_values (
            tenant TEXT NOT NULL,
            metric TEXT NOT NULL,
            property TEXT NOT NULL,
            period TEXT NOT NULL,
            value TEXT NOT NULL,
            billed_in TEXT NOT NULL,
            PRIMARY KEY (tenant, metric, property, period, value)
        ) WITHOUT ROWID;
        CREATE INDEX IF NOT EXISTS unique_values_adjustments
            ON unique_values (tenant, metric, property, billed_in) WHERE billed_in <> period;

        CREATE TABLE IF NOT EXISTS reconciliation (
            period TEXT NOT NULL,
            tenant TEXT NOT NULL,
            agent TEXT NOT NULL,
            received INTEGER NOT NULL,
            accepted INTEGER NOT NULL,
            duplicate INTEGER NOT NULL,
            late INTEGER NOT NULL,
            adjusted INTEGER NOT NULL,
            rejected INTEGER NOT NULL,
            PRIMARY KEY (period, tenant, agent)
        ) WITHOUT ROWID;
        -- Whether a tenant was ever seen (invoices exist only for known tenants). Rows are inserted
        -- once per (period, tenant, agent) and then only updated, so this costs ingest nearly nothing.
        CREATE INDEX IF NOT EXISTS reconciliation_tenant ON reconciliation (tenant);

        -- `reconciliation`: a batch's counts (ReconciliationLogCodec); NULL for a correction's row,
        -- and in rows written before version 7. (A comment inside the column list would make
        -- SQLite's ALTER TABLE … DROP COLUMN fail on this table.)
        CREATE TABLE IF NOT EXISTS aggregate_log (
            id INTEGER PRIMARY KEY,
            cells BLOB NOT NULL,
            reconciliation BLOB
        );

        -- Corrections (CorrectionRecord): an admin's void or amendment of one stored event, in
        -- the order made (id). The raw event itself is never changed. Added beside schema 4 (the
        -- minimums), whose number makes an older Tally refuse the file.
        CREATE TABLE IF NOT EXISTS corrections (
            id INTEGER PRIMARY KEY,
            key TEXT NOT NULL UNIQUE,
            tenant TEXT NOT NULL,
            metric TEXT NOT NULL,
            ts INTEGER NOT NULL,
            fingerprint BLOB NOT NULL,
            action TEXT NOT NULL,
            quantity_before TEXT NOT NULL,
            properties_before BLOB NOT NULL,
            quantity_after TEXT,
            properties_after BLOB,
            billed_in TEXT NOT NULL,
            reason TEXT NOT NULL,
            actor TEXT NOT NULL,
            created_at INTEGER NOT NULL
        );
        CREATE INDEX IF NOT EXISTS corrections_event ON corrections (ts, fingerprint);

        -- Backfills (BackfillRecord): imports of historical events, their counts and reverts.
        CREATE TABLE IF NOT EXISTS levels (
            tenant TEXT NOT NULL,
            metric TEXT NOT NULL,
            ts INTEGER NOT NULL,
            fingerprint BLOB NOT NULL,
            quantity TEXT NOT NULL,
            PRIMARY KEY (tenant, metric, ts, fingerprint)
        ) WITHOUT ROWID;

        CREATE TABLE IF NOT EXISTS backfills (
            id TEXT PRIMARY KEY,
            reason TEXT NOT NULL,
            actor TEXT NOT NULL,
            source TEXT NOT NULL,
            started_at INTEGER NOT NULL,
            received INTEGER NOT NULL,
            accepted INTEGER NOT NULL,
            duplicate INTEGER NOT NULL,
            late INTEGER NOT NULL,
            adjusted INTEGER NOT NULL,
            rejected INTEGER NOT NULL,
            finished INTEGER NOT NULL,
            reverted_at INTEGER,
            revert_reason TEXT
        ) WITHOUT ROWID;

        INSERT OR IGNORE INTO ledger_meta (key, value) VALUES ('schema_version', '\(version)');
        """

    /// One aggregate table. `hour` is the first hour (since the epoch) of the row's bucket: the
    /// hour itself, its UTC day, or its calendar month.
    static func aggregateTable(_ name: String) -> String {
        """
        CREATE TABLE IF NOT EXISTS \(name) (
            tenant TEXT NOT NULL,
            metric TEXT NOT NULL,
            hour INTEGER NOT NULL,
            dimension TEXT NOT NULL,
            value TEXT NOT NULL,
            billed_in TEXT NOT NULL,
            sum TEXT NOT NULL,
            count INTEGER NOT NULL,
            max TEXT NOT NULL,
            latest_ts INTEGER NOT NULL,
            latest_fp BLOB NOT NULL,
            latest_quantity TEXT NOT NULL,
            min TEXT,
            level_delta TEXT NOT NULL DEFAULT '0',
            level_time TEXT NOT NULL DEFAULT '0',
            PRIMARY KEY (tenant, metric, hour, dimension, value, billed_in)
        ) WITHOUT ROWID;
        """
    }

    /// Version 3 to 4: the `min` column of each aggregate table, NULL (not recorded) in every
    /// existing row; version 4 to 5: the level columns, '0'. Idempotent: a table that has a
    /// column is left alone.
    static func addMinimumColumns(_ database: SQLiteDatabase) throws(LedgerError) {
        for grain in AggregateGrain.allCases {
            let table = table(grain)
            let select = try database.prepare("SELECT name FROM pragma_table_info('\(table)')")
            var columns: Set<String> = []
            while try select.step() { columns.insert(select.text(0)) }
            select.reset()
            if !columns.contains("min") { try database.execute("ALTER TABLE \(table) ADD COLUMN min TEXT") }
            for level in ["level_delta", "level_time"] where !columns.contains(level) {
                try database.execute("ALTER TABLE \(table) ADD COLUMN \(level) TEXT NOT NULL DEFAULT '0'")
            }
        }
    }

    /// Version 6 (or older) to 7: `aggregate_log.reconciliation`, NULL in every existing row.
    /// Idempotent.
    static func addLogCountsColumn(_ database: SQLiteDatabase) throws(LedgerError) {
        let select = try database.prepare("SELECT 1 FROM pragma_table_info('aggregate_log') WHERE name = 'reconciliation'")
        let present = try select.step()
        select.reset()
        if !present { try database.execute("ALTER TABLE aggregate_log ADD COLUMN reconciliation BLOB") }
    }

    /// The table of each grain.
    static func table(_ grain: AggregateGrain) -> String {
        switch grain {
        case .hour: "usage_hourly"
        case .day: "usage_daily"
        case .month: "usage_monthly"
        }
    }

    /// Registers `tally_sum(a, b)`, `tally_max(a, b)` and `tally_min(a, b)`: exact 128-bit arithmetic
    /// on quantity text (`tally_min` is NULL when either side is: a minimum not recorded stays so);
    /// and `tally_contains(name, search)`: the admin overview's tenant search (``PeriodUsageQuery``).
    static func registerFunctions(_ database: SQLiteDatabase) throws(LedgerError) {
        guard let handle = database.handle else { throw database.error(SQLITE_MISUSE, "registering functions") }
        let flags = SQLITE_UTF8 | SQLITE_DETERMINISTIC
        var code = sqlite3_create_function_v2(
            handle, "tally_sum", 2, flags, nil, { context, _, arguments in tallySum(context, arguments) }, nil, nil, nil)
        if code == SQLITE_OK {
            code = sqlite3_create_function_v2(
                handle, "tally_max", 2, flags, nil, { context, _, arguments in tallyMax(context, arguments) }, nil, nil, nil)
        }
        if code == SQLITE_OK {
            code = sqlite3_create_function_v2(
                handle, "tally_min", 2, flags, nil, { context, _, arguments in tallyMin(context, arguments) }, nil, nil, nil)
        }
        if code == SQLITE_OK {
            code = sqlite3_create_function_v2(
                handle, "tally_contains", 2, flags, nil, { context, _, arguments in tallyContains(context, arguments) }, nil, nil, nil)
        }
        if code != SQLITE_OK { throw database.error(code, "registering tally_sum, tally_max, tally_min and tally_contains") }
    }
}

private func quantityArgument(_ value: OpaquePointer?) -> Quantity? {
    guard let pointer = sqlite3_value_text(value) else { return nil }
    let count = Int(sqlite3_value_bytes(value))
    return try? Quantity(parsingUTF8: UnsafeBufferPointer(start: pointer, count: count))
}

private func resultQuantity(_ context: OpaquePointer?, _ quantity: Quantity) {
    var text = quantity.description
    text.withUTF8 { bytes in
        bytes.withMemoryRebound(to: CChar.self) { chars in
            sqlite3_result_text(context, chars.baseAddress, Int32(chars.count), tally_sqlite_transient())
        }
    }
}

private func tallySum(_ context: OpaquePointer?, _ arguments: UnsafeMutablePointer<OpaquePointer?>?) {
    guard let arguments, let a = quantityArgument(arguments[0]), let b = quantityArgument(arguments[1]) else {
        sqlite3_result_error(context, "tally_sum: an argument is not an exact decimal quantity", -1)
        return
    }
    do {
        resultQuantity(context, try a.adding(b))
    } catch {
        sqlite3_result_error(context, "tally_sum: quantity overflow: \(a) + \(b) leaves the exact 128-bit range", -1)
    }
}

/// `tally_contains(name, search)`: 1 when `search` is NULL or the ASCII-folded name contains it
/// (the search comes folded), exactly as ``PeriodUsageQuery/matches(tenant:)`` decides.
private func tallyContains(_ context: OpaquePointer?, _ arguments: UnsafeMutablePointer<OpaquePointer?>?) {
    guard let arguments else {
        sqlite3_result_error(context, "tally_contains: no arguments", -1)
        return
    }
    guard let needle = sqlite3_value_text(arguments[1]) else {
        sqlite3_result_int(context, 1)
        return
    }
    guard let name = sqlite3_value_text(arguments[0]) else {
        sqlite3_result_int(context, 0)
        return
    }
    let search = Array(UnsafeBufferPointer(start: needle, count: Int(sqlite3_value_bytes(arguments[1]))))
    let found = PeriodUsageQuery.contains(UnsafeBufferPointer(start: name, count: Int(sqlite3_value_bytes(arguments[0]))), folded: search)
    sqlite3_result_int(context, found ? 1 : 0)
}

private func tallyMax(_ context: OpaquePointer?, _ arguments: UnsafeMutablePointer<OpaquePointer?>?) {
    guard let arguments, let a = quantityArgument(arguments[0]), let b = quantityArgument(arguments[1]) else {
        sqlite3_result_error(context, "tally_max: an argument is not an exact decimal quantity", -1)
        return
    }
    resultQuantity(context, a > b ? a : b)
}

private func tallyMin(_ context: OpaquePointer?, _ arguments: UnsafeMutablePointer<OpaquePointer?>?) {
    guard let arguments else {
        sqlite3_result_error(context, "tally_min: no arguments", -1)
        return
    }
    if sqlite3_value_type(arguments[0]) == SQLITE_NULL || sqlite3_value_type(arguments[1]) == SQLITE_NULL {
        sqlite3_result_null(context)
        return
    }
    guard let a = quantityArgument(arguments[0]), let b = quantityArgument(arguments[1]) else {
        sqlite3_result_error(context, "tally_min: an argument is not an exact decimal quantity", -1)
        return
    }
    resultQuantity(context, a < b ? a : b)
}

/// Properties as stored: for each property in key order, a u32 big-endian byte length and the
/// UTF-8 key, then the same for the value. Exact and cheap to write and read back.
enum PropertiesCodec {
    static func encode(_ properties: Properties) -> [UInt8] {
        var out: [UInt8] = []
        append(properties, to: &out)
        return out
    }

    /// Appends the blob of `properties` to `out` (a batch's blobs share one buffer: see
    /// `PreparedBatch`).
    static func append(_ properties: Properties, to out: inout [UInt8]) {
        for property in properties {
            out.appendString32(property.key)
            out.appendString32(property.value)
        }
    }

    static func decode(_ bytes: [UInt8]) throws(LedgerError) -> Properties {
        try bytes.withUnsafeBytes { raw in
            Result { () throws(LedgerError) -> Properties in
                var reader = ByteReader(raw)
                func next() throws(LedgerError) -> String {
                    guard let count = reader.bigEndian(bytes: 4), let text = reader.slice(count: Int(count)) else {
                        throw .corruptRow("properties blob is truncated")
                    }
                    return String(decoding: text, as: UTF8.self)
                }
                var pairs: [(String, String)] = []
                while reader.remaining > 0 {
                    let key = try next()
                    pairs.append((key, try next()))
                }
                return Properties(pairs)
            }
        }.get()
    }
}
