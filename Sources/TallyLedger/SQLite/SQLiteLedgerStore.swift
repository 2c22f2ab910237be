import CSQLite
public import TallyCore

/// The embedded ledger: one SQLite file in WAL mode with `synchronous = FULL`, so a batch whose
/// commit returned survives a crash or power loss, and a batch whose commit did not return left
/// nothing behind. See ``LedgerStore`` for the guarantees and `SQLiteSchema` for the layout.
///
/// **The aggregate buffer.** Updating the hourly, daily and monthly cells of every batch in its
/// own transaction costs one scattered b-tree page per cell per commit: thousands of pages for
/// a batch that spans many tenants, and the WAL bytes and fsync time that go with them.
/// Instead, a batch's transaction appends its cells to `aggregate_log` as one blob, with its
/// reconciliation counts beside them (so a commit is still all-or-nothing and durable). When
/// the log holds about ``LedgerConfiguration/aggregateBufferCells`` cells or ``maximumLogRows``
/// batches, when the collector's upkeep asks, and before a read that does not merge the log
/// itself (a merging reader, ``mergeUnfoldedLogOnRead()``, adds the log's cells to its answers
/// instead), one transaction reads the log, merges it, writes each merged cell once into the
/// hourly, daily and monthly tables and each summed count once into `reconciliation`, deletes
/// the rows it folded and bumps the fold generation. What it folds is the rows in the database
/// (taken from the writer's memory only when that holds exactly those rows: ``LogMirror``), so
/// a crash leaves nothing to lose (the next open folds the log)
/// and another process that opens the same file — `tallyctl audit` beside a running collector —
/// folds the same rows at most once: the transactions are serialised and each deletes what it
/// folded.
///
/// Overflow stays a per-batch error: a batch whose cells would take a monthly sum (the largest
/// cell) past the 128-bit range is refused. The check uses upper bounds of the logged and the
/// stored sums, and reads the cells exactly only when those bounds leave no headroom.
public final class SQLiteLedgerStore: LedgerStore {
    public let configuration: LedgerConfiguration
    public let path: String
    let database: SQLiteDatabase
    let statements: Statements
    /// An upper bound of every logged cell's sum at any grain (the sum of the logged batches'
    /// quantities), in nano-units.
    var loggedBound: Int128 = 0
    /// Batches and (unmerged) cells this store has logged since its last fold: when to fold.
    var loggedRows = 0
    var loggedCells = 0
    /// The log is folded at this many batches even when they keep hitting the same few cells,
    /// so that it, and the work of opening after a crash, stay bounded.
    static let maximumLogRows = 1_000
    /// ... and at this many times ``LedgerConfiguration/aggregateBufferCells`` logged cells
    /// (each batch's cells counted, repeats included): the log's rows on disk stay bounded too.
    static let loggedCellsPerBufferCell = 8

    /// Whether the log is due a fold after a commit: when a fold would write
    /// ``LedgerConfiguration/aggregateBufferCells`` distinct cells (counted by the mirror; the
    /// logged cells while it does not know the log), or at the bounds on the log's own size.
    ///
    /// Distinct, not logged: a fold's work is one upsert per distinct cell and grain, and
    /// traffic that keeps hitting the same tenants' current hour logs the same cells batch after
    /// batch. Counted as logged cells, a drain of a time-ordered backlog (`tally-bench agent`)
    /// folded every five seconds, each fold holding the writer — and with it every commit —
    /// for most of a second; counted as distinct, it folds a fraction as often, while the
    /// memory the mirror and the fold hold stays bounded by the same setting.
    var foldIsDue: Bool {
        let buffer = configuration.aggregateBufferCells
        if loggedRows >= Self.maximumLogRows || loggedCells / Self.loggedCellsPerBufferCell >= buffer { return true }
        return (logMirror.distinctCellsBound ?? loggedCells) >= buffer
    }
    /// An upper bound of every stored monthly sum, in nano-units.
    var storedSumCeiling: Int128 = 0
    /// The aggregate log's cells as this store wrote them, for the fold (nil: not known).
    let logMirror = LogMirror()
    /// The cells and reconciliation counts ``log(_:growth:encoded:counts:)`` wrote in the open
    /// transaction and their row: added to ``logMirror`` once the transaction commits.
    var pendingLogged: LoggedRow?
    /// (period, tenant, agent) rows the `reconciliation` table is known to have, so that a
    /// batch inserts the zero row of a new one and skips the rest (see `SQLiteSchema`, version 7).
    var knownReconciliationRows: Set<ReconciliationRowKey> = []
    /// The most rows ``knownReconciliationRows`` holds (a few MB).
    static let knownReconciliationLimit = 100_000
    /// The rows the open transaction inserted: known once it commits.
    var pendingReconciliationRows: [ReconciliationRowKey] = []
    /// The raw-event insert's text and blob arguments, bound in place (reused per event).
    var rawArguments = StaticArguments()
    /// Folds that read the log's rows back (``logMirror`` unknown or not the log's whole
    /// content): for the tests.
    var foldsReadingRows = 0
    /// Checkpoints the log off the writer once asked for (``walCheckpointer()``).
    var checkpointer: WALCheckpointer?

    /// A failure to inject, for crash-safety tests.
    enum Fault {
        /// Write everything, then close the connection instead of committing.
        case crashBeforeCommit
        /// Write everything, then fail as a full disk does (SQLITE_FULL) and roll back: for the
        /// readiness tests where no small filesystem can be mounted (not root).
        case diskFull
    }
    var fault: Fault?
    /// A reader's merged unfolded log (``mergeUnfoldedLogOnRead()``); nil for a store that
    /// folds before it reads.
    var unfolded: UnfoldedLog?
    /// Inside ``withSnapshot(_:)``.
    var inReadSnapshot = false

    /// Opens (creating if needed) the ledger at `path`.
    public init(path: String, configuration: LedgerConfiguration = LedgerConfiguration()) throws(LedgerError) {
        try configuration.validate()
        self.configuration = configuration
        self.path = path
        database = try SQLiteDatabase(path: path)
        try database.execute(SQLiteSchema.pragmas)
        try SQLiteSchema.registerFunctions(database)
        try database.execute("BEGIN IMMEDIATE; \(SQLiteSchema.tables) COMMIT;")
        try SQLiteLedgerStore.addColumns(database, path: path)
        statements = try Statements(database)
        try migrate()
        storedSumCeiling = try readSumCeiling()
        try flushAggregates()
        try startLogMirrorIfEmpty()
    }

    /// Folds the aggregate log in and closes the store.
    public func close() {
        if database.handle != nil { try? flushAggregates() }
        checkpointer?.stop()
        database.close()
    }

    /// Brings an older file to the current version in one transaction. Version 1 (hourly
    /// aggregates only): the daily and monthly rollups are built from the hourly rows. Version 2:
    /// the same tables, relabelled (see `SQLiteSchema`); so are versions 3 to 6.
    func migrate() throws(LedgerError) {
        let select = try database.prepare("SELECT value FROM ledger_meta WHERE key = 'schema_version'")
        let version = try select.step() ? select.text(0) : SQLiteSchema.version
        select.reset()
        guard version != SQLiteSchema.version else { return }
        guard ["1", "2", "3", "4", "5", "6"].contains(version) else {
            throw .invalidConfiguration("the ledger \(path) has schema version \(version); this Tally reads version \(SQLiteSchema.version)")
        }
        try statements.begin.run()
        do throws(LedgerError) {
            if version == "1" { try buildRollups() }
            try database.execute("UPDATE ledger_meta SET value = '\(SQLiteSchema.version)' WHERE key = 'schema_version'")
            try commitTransaction()
        } catch {
            try? statements.rollback.run()
            throw error
        }
    }

    /// Version 6 (or older) to 7, before any statement is prepared: the `min` columns (version
    /// 4), the level columns (version 5) and the log's reconciliation counts (version 7). A file
    /// of a newer version is left alone (``migrate()`` refuses it).
    static func addColumns(_ database: SQLiteDatabase, path: String) throws(LedgerError) {
        let select = try database.prepare("SELECT value FROM ledger_meta WHERE key = 'schema_version'")
        let version = try select.step() ? select.text(0) : SQLiteSchema.version
        select.reset()
        guard ["1", "2", "3", "4", "5", "6"].contains(version) else { return }
        try database.execute("BEGIN IMMEDIATE")
        do throws(LedgerError) {
            if ["1", "2", "3", "4"].contains(version) { try SQLiteSchema.addMinimumColumns(database) }
            try SQLiteSchema.addLogCountsColumn(database)
            try database.execute("COMMIT")
        } catch {
            try? database.execute("ROLLBACK")
            throw error
        }
    }

    /// Version 1 to 2: the daily and monthly rollups, from the hourly rows.
    private func buildRollups() throws(LedgerError) {
        var hourly = AggregateCells()
        for (key, aggregate) in try readCells(table: "usage_hourly", tenant: nil, hours: Int64.min..<Int64.max) {
            try hourly.add(aggregate, at: key)
        }
        for grain in [AggregateGrain.day, .month] {
            guard let upsert = statements.upsertAggregate[grain] else { continue }
            try upsertCells(try hourly.rolledUp(to: grain), with: upsert)
        }
    }

    /// One upsert per cell; sums are exact (`tally_sum`), and an overflow fails the statement and
    /// so the whole transaction.
    func upsertCells(_ cells: AggregateCells, with upsert: SQLiteStatement) throws(LedgerError) {
        for (step, (key, aggregate)) in cells.cells.enumerated() {
            // A fold upserts tens of thousands of cells: tens of milliseconds of the writer.
            YieldPoint.after(step: step, every: 64)
            upsert.bind(cell: key)
            upsert.bind(7, aggregate.sum.description)
            upsert.bind(8, aggregate.count)
            upsert.bind(9, aggregate.max.description)
            upsert.bind(10, aggregate.latest.timestamp.microseconds)
            upsert.bind(11, fingerprint: aggregate.latest.fingerprint)
            upsert.bind(12, aggregate.latest.quantity.description)
            if let minimum = aggregate.min { upsert.bind(13, minimum.description) } else { upsert.bindNull(13) }
            // Zero in every cell but a weighted_sum's: no number formatting on the hot path.
            upsert.bind(14, aggregate.levelDelta == .zero ? "0" : aggregate.levelDelta.description)
            upsert.bind(15, aggregate.levelTime == .zero ? "0" : aggregate.levelTime.description)
            do throws(LedgerError) {
                try upsert.run()
            } catch {
                if case .database(_, let message, _) = error, message.contains("overflow") {
                    throw .quantityOverflow("the \(key) aggregate: \(message)")
                }
                throw error
            }
        }
    }

    // MARK: - Prune

    /// The raw table is also the dedupe index, and it is kept forever (it is the audit ledger):
    /// only events within the late-arrival limit ever reach it (older ones are refused as
    /// `too_old` and kept in `refused_events`), so dedupe needs no separate structure to bound,
    /// and its lookups touch only the recent, time-ordered tail of the key. What prune bounds is
    /// the batch-record table (the per-batch fast path): records older than the dedupe horizon
    /// are deleted, and the highest pruned sequence per agent is kept so that a replay of a
    /// pruned batch is refused with ``LedgerError/batchExpired(agent:sequence:)`` instead of
    /// being counted again.
    @discardableResult
    public func prune(now: EventTime) throws(LedgerError) -> PruneReport {
        let cutoff = now.advanced(by: .zero - configuration.dedupeHorizon).microseconds
        try statements.begin.run()
        do throws(LedgerError) {
            let mark = statements.markPruned
            mark.bind(1, cutoff)
            try mark.run()
            let delete = statements.deleteBatches
            delete.bind(1, cutoff)
            try delete.run()
            let deleted = database.changes
            try statements.commit.run()
            return PruneReport(batchRecordsDeleted: deleted)
        } catch {
            try? statements.rollback.run()
            throw error
        }
    }
}

extension SQLiteStatement {
    /// Binds an aggregate cell's key to parameters 1–6: tenant, metric, hour, dimension, value,
    /// billed_in ("" for usage billed in its own period).
    func bind(cell key: AggregateCellKey) {
        bind(1, key.tenant)
        bind(2, key.metric)
        bind(3, key.hour)
        bind(4, key.dimension)
        bind(5, key.value)
        bind(6, key.billedIn?.description ?? "")
    }
}

/// What the collector runs beside this store: the commit's pure steps on its preparation
/// threads, the merge of committed log rows into ``LogMirror`` and the WAL checkpoints.
extension SQLiteLedgerStore {
    public func batchSpeculator() -> BatchSpeculator? { BatchSpeculator(configuration: configuration) }

    public func logMerger() -> LogMerger? { LogMerger(mirror: logMirror) }

    public func walCheckpointer() -> WALCheckpointer? { walCheckpointer(threshold: SQLiteSchema.checkpointPages) }

    /// ``walCheckpointer()`` starting at `threshold` pages of log (tests use a small one).
    func walCheckpointer(threshold: Int32) -> WALCheckpointer {
        if let checkpointer { return checkpointer }
        let made = WALCheckpointer(path: path, threshold: threshold)
        made.install(on: database)
        checkpointer = made
        return made
    }
}
