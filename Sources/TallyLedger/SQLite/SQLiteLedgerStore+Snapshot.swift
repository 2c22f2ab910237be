import CSQLite
import TallyCore

/// The merging reader's side of the aggregate log (``SQLiteLedgerStore/mergeUnfoldedLogOnRead()``):
/// a read snapshot, and what an aggregate or reconciliation read adds to the tables' rows from
/// the log rows of that snapshot, so that a reader never folds.
extension SQLiteLedgerStore {
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
}
