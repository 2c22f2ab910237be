import CSQLite
import TallyCore

/// The aggregate buffer's durable half (see ``SQLiteLedgerStore``): logging a batch's cells and
/// reconciliation counts with the overflow check, and folding the log into the three aggregate
/// tables and `reconciliation`. The merging reader's side is in `SQLiteLedgerStore+Snapshot`,
/// the writer's memory of the log in `LogMirror`.
extension SQLiteLedgerStore {
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
