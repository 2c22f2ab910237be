import CSQLite
import Synchronization
import TallyCore

/// The aggregate buffer's durable half (see ``SQLiteLedgerStore``): logging a batch's cells with
/// the overflow check, folding the log into the three tables, and the snapshot reads rely on.
extension SQLiteLedgerStore {
    // MARK: - Aggregate log

    public func withSnapshot<T>(_ body: () throws(LedgerError) -> T) throws(LedgerError) -> T {
        guard !inReadSnapshot else { return try body() }
        // A deferred transaction: in WAL mode its first read fixes the snapshot, and it never
        // takes the write lock unless the body writes.
        let begin = try database.prepare("BEGIN DEFERRED")
        try begin.run()
        do throws(LedgerError) {
            if unfolded != nil { try readUnfoldedLog() }
            inReadSnapshot = true
            defer { inReadSnapshot = false }
            let result = try body()
            try statements.commit.run()
            return result
        } catch {
            try? statements.rollback.run()
            throw error
        }
    }

    /// Makes this store a reader that never folds: inside ``withSnapshot(_:)`` its aggregate
    /// reads add the snapshot's unfolded log cells to the tables' rows (see ``UnfoldedLog``).
    /// Outside a snapshot it still folds first (a plain read has no snapshot to merge in).
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

    public func mergeUnfoldedLogOnRead() -> Bool {
        if unfolded == nil {
            unfolded = UnfoldedLog()
            // A reader's page cache is emptied whenever another connection has written (WAL),
            // so under ingest it never holds more than a read touches: 8 MiB, not the writer's 64.
            try? database.execute("PRAGMA cache_size = -8192")
        }
        return true
    }

    /// Starts ``unfolded`` on the snapshot: reads the fold generation, first thing in the
    /// snapshot's transaction, so it also fixes the snapshot.
    func readUnfoldedLog() throws(LedgerError) {
        let generation = try database.prepare(
            "SELECT COALESCE((SELECT CAST(value AS INTEGER) FROM ledger_meta WHERE key = 'fold_generation'), 0)")
        defer { generation.reset() }
        guard try generation.step() else { return }
        unfolded?.start(generation: generation.int64(0))
    }

    /// What an aggregate read of `tenant` (every tenant if nil) adds to the tables' rows: for a
    /// merging reader inside ``withSnapshot(_:)``, the unfolded cells of this snapshot, brought
    /// up to date for the tenant; otherwise nil, after folding the log so the tables hold
    /// everything.
    func unfoldedForRead(tenant: String?) throws(LedgerError) -> UnfoldedCells? {
        guard inReadSnapshot, var log = unfolded else {
            try flushAggregates()
            return nil
        }
        guard let tenant else {
            // Every tenant (an audit): decoded afresh, not kept.
            var all = UnfoldedCells()
            try forEachLogRow(after: 0, tenant: nil) { (id, cells) throws(LedgerError) in try all.add(row: id, cells) }
            return all.isEmpty ? nil : all
        }
        unfolded = nil
        do throws(LedgerError) {
            try forEachLogRow(after: log.lastRow(of: tenant), tenant: tenant) { (id, cells) throws(LedgerError) in
                try log.add(row: id, tenant: tenant, cells)
            }
        } catch {
            // A row that would not decode (or a failed step) leaves the tenant half merged:
            // start over at the next read rather than keep a partial merge.
            log.reset()
            unfolded = log
            throw error
        }
        unfolded = log
        return log.cells(of: tenant)
    }

    /// Each log row after id `after`, in id order, with the decoder of its cells of `tenant`
    /// (of every tenant if nil), read in place.
    private func forEachLogRow(
        after: Int64, tenant: String?, _ body: (Int64, LogRowCells) throws(LedgerError) -> Void
    ) throws(LedgerError) {
        let select = try database.prepare("SELECT id, cells FROM aggregate_log WHERE id > ?1 ORDER BY id")
        defer { select.reset() }
        select.bind(1, after)
        while try select.step() {
            try body(select.int64(0)) { (cell: (AggregateCellKey, UsageAggregate) throws(LedgerError) -> Void) throws(LedgerError) in
                try select.withBlob(1) { (bytes: UnsafeRawBufferPointer) throws(LedgerError) in
                    try AggregateLogCodec.decode(bytes, tenant: tenant, cell)
                }
            }
        }
    }

    public func hasUnfoldedAggregates() throws(LedgerError) -> Bool {
        if loggedRows > 0 { return true }
        let any = try database.prepare("SELECT EXISTS (SELECT 1 FROM aggregate_log)")
        defer { any.reset() }
        return try any.step() && any.int64(0) != 0
    }

    public func foldAggregates() throws(LedgerError) { try flushAggregates() }

    /// Folds `aggregate_log` into the hourly, daily and monthly tables in one transaction, deletes
    /// the folded rows and bumps the fold generation. Reads that do not merge the log call this
    /// first, so they see every committed batch.
    func flushAggregates() throws(LedgerError) {
        // Another process or connection (a collector beside this `tallyctl`) may have logged
        // batches, so an empty count here is checked against the table.
        guard try hasUnfoldedAggregates() else { return }
        try statements.begin.run()
        var largest: Int128 = 0
        let foldedGeneration: Int64
        do throws(LedgerError) {
            let (cells, counts, lastID, generation) = try logToFold()
            foldedGeneration = lastID == nil ? generation : generation + 1
            if let lastID {
                // Each grain rolled up from the one below it (days from hours, months from days):
                // the same cells, since merging is exact in any grouping, from fewer cells.
                var rolled = cells
                for grain in AggregateGrain.allCases {
                    guard let upsert = statements.upsertAggregate[grain] else { continue }
                    rolled = try rolled.rolledUp(to: grain)
                    try upsertCells(rolled, with: upsert)
                    if grain == .month { largest = rolled.cells.values.reduce(0) { max($0, $1.sum.nanos) } }
                }
                try upsertReconciliation(counts)
                statements.deleteLog.bind(1, lastID)
                try statements.deleteLog.run()
                try statements.bumpFoldGeneration.run()
            }
            try commitTransaction()
        } catch {
            if database.handle != nil { try? statements.rollback.run() }
            logMirror.forget()
            throw error
        }
        // The fold held the write lock from its first read: the log it emptied stays empty
        // until this store's next batch, or another connection's.
        logMirror.restart(at: foldedGeneration)
        loggedBound = 0
        loggedRows = 0
        loggedCells = 0
        let (raised, overflow) = storedSumCeiling.addingReportingOverflow(largest)
        storedSumCeiling = overflow ? .max : raised
    }

    /// The log's cells and reconciliation counts, merged, its last row (nil: empty) and the fold
    /// generation: from ``logMirror`` when it holds exactly the log's rows, else read back from
    /// the rows. Call it inside the fold's transaction, which holds the write lock.
    func logToFold() throws(LedgerError) -> (AggregateCells, ReconciliationSums, Int64?, Int64) {
        let (rows, lastRow, generation) = try logState()
        if let (cells, counts) = logMirror.contents(ifLogHas: rows, lastRow: lastRow, generation: generation) {
            return (cells, counts, lastRow == 0 ? nil : lastRow, generation)
        }
        foldsReadingRows += 1
        let (cells, counts, lastID) = try readLog(counts: true)
        return (cells, counts, lastID, generation)
    }

    /// Adds the folded rows' summed counts onto the `reconciliation` table, in key order.
    private func upsertReconciliation(_ sums: ReconciliationSums) throws(LedgerError) {
        let upsert = statements.upsertReconciliation
        for (key, counts) in sums.sorted(by: { $0.key.inByteOrder(before: $1.key) }) {
            upsert.bind(1, key.period)
            upsert.bind(2, key.tenant)
            upsert.bind(3, key.agent)
            upsert.bind(4, counts.received)
            upsert.bind(5, counts.accepted)
            upsert.bind(6, counts.duplicate)
            upsert.bind(7, counts.late)
            upsert.bind(8, counts.adjusted)
            upsert.bind(9, counts.rejected)
            try upsert.run()
        }
    }

    /// What a reconciliation read adds to the table's rows: for a merging reader inside
    /// ``withSnapshot(_:)``, the counts of the snapshot's log rows (decoded afresh: these reads
    /// are audits, not dashboards); otherwise nil, after folding the log so the table holds
    /// everything.
    func unfoldedReconciliation() throws(LedgerError) -> ReconciliationSums? {
        guard inReadSnapshot, unfolded != nil else {
            try flushAggregates()
            return nil
        }
        let select = try database.prepare("SELECT reconciliation FROM aggregate_log WHERE reconciliation IS NOT NULL")
        defer { select.reset() }
        var sums = ReconciliationSums()
        while try select.step() {
            try select.withBlob(0) { (bytes: UnsafeRawBufferPointer) throws(LedgerError) in try ReconciliationLogCodec.decode(bytes, into: &sums) }
        }
        return sums.isEmpty ? nil : sums
    }

    /// The log's row count and last row (0: none), and the fold generation, read at once.
    private func logState() throws(LedgerError) -> (rows: Int64, lastRow: Int64, generation: Int64) {
        let state = try database.prepare(
            """
            SELECT (SELECT count(*) FROM aggregate_log), COALESCE((SELECT max(id) FROM aggregate_log), 0),
                   COALESCE((SELECT CAST(value AS INTEGER) FROM ledger_meta WHERE key = 'fold_generation'), 0)
            """)
        defer { state.reset() }
        guard try state.step() else { throw .corruptRow("the aggregate log's state has no row") }
        return (state.int64(0), state.int64(1), state.int64(2))
    }

    /// Starts ``logMirror`` when the log is empty (at open, after the recovery fold), so that
    /// the first fold takes the writer's cells too. Rows another connection logs after this
    /// read are found by the fold's check.
    func startLogMirrorIfEmpty() throws(LedgerError) {
        guard !logMirror.isKnown else { return }
        let state = try logState()
        if state.rows == 0 { logMirror.restart(at: state.generation) }
    }

    /// After a commit: the row its transaction logged joins ``logMirror``.
    func mirrorCommittedLog() {
        guard let logged = pendingLogged else { return }
        pendingLogged = nil
        logMirror.add(logged)
    }

    /// Every logged cell, merged, the rows' reconciliation counts summed (with `counts`; else
    /// none) and the id of the last row read (nil for an empty log).
    func readLog(counts: Bool) throws(LedgerError) -> (AggregateCells, ReconciliationSums, Int64?) {
        let select = try database.prepare("SELECT id, cells, reconciliation FROM aggregate_log ORDER BY id")
        defer { select.reset() }
        var cells = AggregateCells(minimumCapacity: min(loggedCells, 1 << 20))
        var sums = ReconciliationSums()
        var lastID: Int64?
        while try select.step() {
            lastID = select.int64(0)
            try select.withBlob(1) { (bytes: UnsafeRawBufferPointer) throws(LedgerError) in try AggregateLogCodec.decode(bytes, into: &cells) }
            if counts, !select.isNull(2) {
                try select.withBlob(2) { (bytes: UnsafeRawBufferPointer) throws(LedgerError) in try ReconciliationLogCodec.decode(bytes, into: &sums)
                }
            }
        }
        return (cells, sums, lastID)
    }

    /// An upper bound of the stored monthly sums from the longest sum text: a decimal of n
    /// characters is below 10^n units.
    func readSumCeiling() throws(LedgerError) -> Int128 {
        let select = try database.prepare("SELECT COALESCE(MAX(LENGTH(sum)), 0) FROM usage_monthly")
        defer { select.reset() }
        guard try select.step() else { return 0 }
        var ceiling: Int128 = Quantity.nanosPerUnit
        for _ in 0..<select.int64(0) {
            let (next, overflow) = ceiling.multipliedReportingOverflow(by: 10)
            if overflow { return .max }
            ceiling = next
        }
        return ceiling
    }

    /// Logs a batch's cells, refusing the batch if a monthly sum (the largest cell of any grain)
    /// would leave the 128-bit range. Cheap when the bounds leave headroom, as they always do for
    /// real usage; otherwise every monthly cell of the batch is checked exactly. Runs inside the
    /// batch's transaction and returns the new logged bound, to keep once it commits.
    /// `growth` bounds how much any one cell can grow (default: the cells' total sum, right for
    /// a batch's events; a correction's negative cells give the quantities it adds).
    /// `encoded`: `cells` already encoded in this store's layout (``LedgerSpeculation``).
    /// `counts`: a batch's reconciliation counts (``ReconciliationLogCodec``), logged in the same
    /// row (a row is written for them even when the batch has no cells).
    func log(_ cells: AggregateCells, growth: Quantity? = nil, encoded: [UInt8]? = nil, counts: [UInt8]? = nil) throws(LedgerError) -> Int128 {
        guard !cells.isEmpty || counts != nil else { return loggedBound }
        var result = loggedBound
        if !cells.isEmpty {
            let batchBound: Int128
            if let growth { batchBound = growth.nanos } else { batchBound = try cells.totalSum().nanos }
            let (bound, overflow) = loggedBound.addingReportingOverflow(batchBound)
            let (_, noHeadroom) = bound.addingReportingOverflow(storedSumCeiling)
            if overflow || noHeadroom { try checkMonthlySums(cells) }
            result = overflow ? .max : bound
        }
        let insert = statements.insertLog
        insert.bind(1, blob: encoded ?? AggregateLogCodec.encode(cells))
        if let counts { insert.bind(2, blob: counts) } else { insert.bindNull(2) }
        try insert.run()
        pendingLogged = LoggedRow(cells: cells, counts: counts, row: database.lastInsertRowID)
        return result
    }

    /// The exact check: batch + log + stored, per monthly cell.
    func checkMonthlySums(_ cells: AggregateCells) throws(LedgerError) {
        let monthly = try cells.rolledUp(to: .month)
        let logged = try readLog(counts: false).0.rolledUp(to: .month)
        for (key, aggregate) in monthly.cells {
            var total = aggregate.sum
            if let already = logged.cells[key] {
                do { total = try total.adding(already.sum) } catch {
                    throw .quantityOverflow("the \(key) aggregate: \(already.sum) + \(aggregate.sum)")
                }
            }
            if let stored = try storedMonthlySum(key) {
                do { _ = try total.adding(stored) } catch {
                    throw .quantityOverflow("the \(key) aggregate: \(stored) + \(total)")
                }
            }
        }
    }

    func storedMonthlySum(_ key: AggregateCellKey) throws(LedgerError) -> Quantity? {
        let select = try database.prepare(
            """
            SELECT sum FROM usage_monthly
            WHERE tenant = ?1 AND metric = ?2 AND hour = ?3 AND dimension = ?4 AND value = ?5 AND billed_in = ?6
            """)
        defer { select.reset() }
        select.bind(cell: key)
        return try select.step() ? try Self.quantity(select.text(0), "usage_monthly sum") : nil
    }
}

/// A row a store's open transaction logged: its cells, its reconciliation counts as logged
/// (``ReconciliationLogCodec``; nil for a correction's row) and its id.
struct LoggedRow: Sendable {
    var cells: AggregateCells
    var counts: [UInt8]?
    var row: Int64
}

/// Reconciliation counts summed per (period, tenant, agent).
typealias ReconciliationSums = [ReconciliationLogCodec.Key: ReconciliationCounts]

/// A (period, tenant, agent) row of the `reconciliation` table, as the writer remembers it.
struct ReconciliationRowKey: Hashable {
    var period: BillingPeriod
    var tenant: String
    var agent: String
}

extension SQLiteLedgerStore {
    /// The most (period, tenant, agent) rows the writer remembers having (a few MB).
    static let knownReconciliationLimit = 100_000
}

/// The aggregate log as the store that writes it knows it: the cells and reconciliation counts
/// of each row it logged since the log was last empty, kept in memory, so that the fold takes
/// them from here instead of reading every row back and decoding it (a quarter of the writer's
/// time before).
///
/// **Why it is exact.** It starts empty when a fold of this store empties the log, at the
/// generation that fold leaves; a row joins it once the transaction that inserted it commits.
/// Rows leave the log only by a fold, and every fold bumps the generation. So while the
/// generation is unchanged, every row it holds is still in the log; and when the log then holds
/// as many rows as it does, with the same last row, the log is exactly its rows — no other
/// connection (a `tallyctl` beside the collector) logged or folded meanwhile. The fold checks
/// this inside its own transaction and otherwise reads the rows, as after opening.
///
/// **Who merges.** Merging each committed batch's cells into the mirror was about a tenth of the
/// writer thread's time under ingest, and the writer is what limits ingest. So the writer only
/// queues a committed batch's cells (``add(_:row:)``, an append under a lock held for nothing
/// else), and the merging is done by a thread with time to spare: the collector's preparation
/// threads, between two batches (``mergeQueued()`` through ``LogMerger``); whatever is still
/// queued when the fold asks, the fold merges itself. A merge in progress holds the state lock,
/// so a fold waits at most for the batches that merge took out of the queue, never for the next.
final class LogMirror: Sendable {
    private struct State {
        /// The fold generation the log was empty at; nil while the mirror does not know the log
        /// (after opening with rows in it, or after a failed fold), until the next fold.
        var generation: Int64?
        /// The rows' cells, merged: the dictionary grows to the distinct cells, and keeps its
        /// storage from one fold to the next.
        var cells = AggregateCells()
        /// The rows' reconciliation counts, summed.
        var counts = ReconciliationSums()
        var rows: Int64 = 0
        var lastRow: Int64 = 0
        /// Batches merged by ``LogMirror/mergeQueued()`` rather than by a fold (tests).
        var mergedAhead = 0

        mutating func merge(_ batches: [LoggedRow]) {
            guard generation != nil else { return }
            for batch in batches {
                do throws(LedgerError) {
                    try cells.merge(batch.cells)
                    if let logged = batch.counts {
                        try logged.withUnsafeBytes { bytes in
                            Result { () throws(LedgerError) in try ReconciliationLogCodec.decode(bytes, into: &counts) }
                        }.get()
                    }
                } catch {
                    // A sum past the range: the fold reads the rows and reports it.
                    generation = nil
                    return
                }
                rows += 1
                lastRow = batch.row
            }
        }
    }

    private let state = Mutex(State())
    /// Committed batches' cells not merged yet, oldest first.
    private let queued = Mutex<[LoggedRow]>([])

    /// Whether the mirror knows the log (it does from the first fold or empty open on).
    var isKnown: Bool { state.withLock { $0.generation != nil } }

    /// Batches merged ahead of the fold, by ``mergeQueued()`` (tests).
    var batchesMergedAhead: Int { state.withLock { $0.mergedAhead } }

    /// A committed batch's logged row. The writer's only cost: an append.
    func add(_ batch: LoggedRow) {
        queued.withLock { $0.append(batch) }
    }

    /// Merges the queued batches, on the calling thread; returns at once when another thread is
    /// merging (it takes what is queued too).
    func mergeQueued() {
        _ = state.withLockIfAvailable { state in
            let batches = takeQueued()
            state.merge(batches)
            state.mergedAhead += batches.count
        }
    }

    /// The merged cells and summed counts when the log holds exactly these rows (`rows` rows,
    /// the last `lastRow`, at `generation`); nil otherwise. Merges what is still queued first.
    func contents(ifLogHas rows: Int64, lastRow: Int64, generation: Int64) -> (AggregateCells, ReconciliationSums)? {
        state.withLock { state -> (AggregateCells, ReconciliationSums)? in
            state.merge(takeQueued())
            guard state.generation == generation, rows == state.rows, lastRow == state.lastRow else { return nil }
            return (state.cells, state.counts)
        }
    }

    /// Empty again, at `generation` (a fold emptied the log).
    func restart(at generation: Int64) {
        state.withLock { state in
            _ = takeQueued()
            state.generation = generation
            state.cells.removeAll()
            state.counts.removeAll(keepingCapacity: true)
            state.rows = 0
            state.lastRow = 0
        }
    }

    /// Not the log any more (a fold failed): the next fold reads the rows.
    func forget() {
        state.withLock { state in
            _ = takeQueued()
            state.generation = nil
            state.cells.removeAll()
            state.counts.removeAll()
        }
    }

    private func takeQueued() -> [LoggedRow] {
        queued.withLock { queue in
            var taken: [LoggedRow] = []
            swap(&taken, &queue)
            return taken
        }
    }
}

/// Merges the SQLite writer's committed log cells into its ``LogMirror`` on the calling thread
/// (see there): the collector calls ``mergeQueued()`` on its preparation threads.
public struct LogMerger: Sendable {
    let mirror: LogMirror

    public func mergeQueued() { mirror.mergeQueued() }
}
