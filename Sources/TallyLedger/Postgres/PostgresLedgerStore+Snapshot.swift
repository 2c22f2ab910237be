import NIOCore
import PostgresNIO
import TallyCore

/// Reads in one snapshot: the deferred read transaction and its cache, and the merging reader
/// that adds the snapshot's unfolded log rows to the tables' answers (``PostgresUnfoldedLog``).
extension PostgresLedgerStore {
    public func mergeUnfoldedLogOnRead() -> Bool {
        if unfolded == nil { unfolded = PostgresUnfoldedLog() }
        return true
    }

    /// A read snapshot, begun only when a read needs the database: a read answered from the
    /// cache costs one round trip (the log check), not three. When the snapshot does begin, it
    /// checks that the log is still empty at the generation the cached answers came from; if a
    /// batch or a fold came in between, the body runs again in a snapshot begun at once.
    public func withSnapshot<T>(_ body: () throws(LedgerError) -> T) throws(LedgerError) -> T {
        inSnapshot = true
        snapshotMoved = false
        defer {
            snapshotGeneration = nil
            snapshotTablesGeneration = nil
            inSnapshot = false
        }
        let isolation = "ISOLATION LEVEL REPEATABLE READ READ ONLY"
        do {
            return try session.deferredTransaction(
                "reading a snapshot", isolation: isolation,
                onBegin: { [unowned self] () throws(LedgerError) in
                    guard let assumed = snapshotGeneration else { return }
                    let (unfolded, generation) = try readLogState(autocommit: false)
                    if unfolded || generation != assumed {
                        snapshotMoved = true
                        throw .database(code: -1, message: "the ledger changed during the read", context: "reading a snapshot")
                    }
                }, body)
        } catch  where snapshotMoved {
            snapshotGeneration = nil
            snapshotTablesGeneration = nil
            return try session.transaction("reading a snapshot", isolation: isolation, body)
        }
    }

    /// Whether the aggregate log has rows, and the fold generation, in one statement.
    private func readLogState(autocommit: Bool) throws(LedgerError) -> (unfolded: Bool, generation: Int64) {
        let rows = try session.query(
            "SELECT EXISTS (SELECT 1 FROM aggregate_log), (SELECT fold_generation FROM ledger_bounds WHERE id = 1)",
            "checking the aggregate log", autocommit: autocommit)
        guard let row = rows.first else { throw .corruptRow("no ledger_bounds row") }
        do { return try row.decode((Bool, Int64).self) } catch { throw .corruptRow("log check: \(error)") }
    }

    public func hasUnfoldedAggregates() throws(LedgerError) -> Bool {
        if snapshotGeneration != nil { return false }
        if loggedRows > 0 { return true }
        // In a snapshot not begun yet, the check runs on its own: if every answer is cached,
        // the snapshot never needs to begin.
        let (unfolded, generation) = try readLogState(autocommit: inSnapshot && !session.inTransaction)
        // Inside a snapshot the answer cannot change: the body's reads need not ask again, and
        // answers cached at this generation are still current (see ``PostgresReadCache``).
        if !unfolded && inSnapshot { snapshotGeneration = generation }
        return unfolded
    }

    /// `read()`'s answer, from the read cache when this snapshot's generation has it. A read of
    /// the aggregate tables alone (`tablesOnly`: `usage_*`, which only a fold changes) may use
    /// the cache in a snapshot whose log a merging reader listed; any other (unique values,
    /// corrections, written by commits) only in a snapshot that found the log empty.
    func cachedRead<T>(
        _ name: String, _ parameters: [String], rows: (T) -> Int, tablesOnly: Bool = false, _ read: () throws(LedgerError) -> T
    ) throws(LedgerError) -> T {
        guard let generation = snapshotGeneration ?? (tablesOnly ? snapshotTablesGeneration : nil) else { return try read() }
        let key = PostgresReadCache.Key(read: name, parameters: parameters)
        if let answer: T = readCache.answer(key, at: generation) { return answer }
        let answer = try read()
        readCache.keep(answer, rows: rows(answer), for: key, at: generation)
        return answer
    }

    /// What an aggregate read of `tenant` adds to the tables' rows: for a merging reader inside
    /// ``withSnapshot(_:)``, the snapshot's unfolded log cells of the tenant (nil when the log is
    /// empty); otherwise nil, after folding the log so the tables hold everything.
    func unfoldedForRead(tenant: String) throws(LedgerError) -> UnfoldedCells? {
        guard try takeSnapshotLog(), var log = unfolded else { return nil }
        // Out of the store while it decodes, so that its arrays are not copied.
        unfolded = nil
        do {
            let cells = try log.cells(of: tenant)
            unfolded = log
            return cells
        } catch {
            // A section that would not decode: start over at the next read.
            unfolded = PostgresUnfoldedLog()
            throw error
        }
    }

    /// What a reconciliation read adds to the table's rows, as ``unfoldedForRead(tenant:)``:
    /// the snapshot's unfolded counts per (period, tenant, agent), or nil.
    func unfoldedReconciliation() throws(LedgerError) -> ReconciliationSums? {
        guard try takeSnapshotLog(), let counts = unfolded?.reconciliation, !counts.isEmpty else { return nil }
        return counts
    }

    /// For a merging reader inside ``withSnapshot(_:)``: takes the snapshot's log rows not
    /// taken yet into ``unfolded`` (listed once per snapshot); false when the snapshot's log is
    /// empty. For any other use: false, after folding the log so the tables hold everything.
    private func takeSnapshotLog() throws(LedgerError) -> Bool {
        guard inSnapshot, var log = unfolded else {
            try flushAggregates()
            return false
        }
        if snapshotTablesGeneration != nil { return true }
        // An empty log: the tables hold everything, and answers may come from the read cache.
        // Under ingest the log is seldom empty: after a snapshot that found rows, the check (a
        // round trip of its own, outside the transaction) is skipped and the listing tells.
        if snapshotGeneration != nil { return false }
        if !lastSnapshotHadLog {
            guard try hasUnfoldedAggregates() else { return false }
        }
        unfolded = nil
        var listed = 0
        var generation: Int64 = 0
        do throws(LedgerError) {
            // Not autocommit: this begins the snapshot's transaction if no read did yet, so the
            // rows merged and the tables read are those of one snapshot.
            let listing = try session.query(
                "SELECT (SELECT fold_generation FROM ledger_bounds WHERE id = 1), ARRAY(SELECT id FROM aggregate_log)",
                "listing the aggregate log")
            guard let first = listing.first else { throw .corruptRow("no ledger_bounds row") }
            let ids: [Int64]
            do { (generation, ids) = try first.decode((Int64, [Int64]).self) } catch { throw .corruptRow("aggregate log listing: \(error)") }
            listed = ids.count
            if ids.isEmpty {
                // Empty in this snapshot (its transaction has begun): every answer may come from
                // the cache at its generation, as after the check.
                snapshotGeneration = generation
            }
            let missing = log.rowsToMerge(generation: generation, ids: ids)
            if !missing.isEmpty {
                // Each row copied out as it arrives (``PostgresSession/rows(_:_:copying:)``): its
                // bytes are a slice of postgres-nio's receive buffer.
                let rows = try session.rows(
                    "SELECT id, cells, reconciliation FROM aggregate_log WHERE id = ANY(\(missing))", "reading the aggregate log"
                ) { (row) throws(LedgerError) in try Self.logRow(row) }
                for (id, cells, counts) in rows {
                    guard let cells else { throw .corruptRow("aggregate log row \(id) has no cells") }
                    try log.add(row: id, cells: cells) { (sums: inout ReconciliationSums) throws(LedgerError) in
                        if let counts { try ReconciliationLogCodec.decode(counts, into: &sums) }
                    }
                }
            }
        } catch {
            // A row that would not decode (or a failed query) leaves a partial merge: start over
            // at the next read.
            unfolded = PostgresUnfoldedLog()
            throw error
        }
        unfolded = log
        snapshotTablesGeneration = generation
        lastSnapshotHadLog = listed > 0
        return true
    }
}
