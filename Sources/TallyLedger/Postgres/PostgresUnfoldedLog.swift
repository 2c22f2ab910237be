/// The aggregate log as a PostgreSQL reader holds it: the cells of the logged batches that no
/// fold has written into the aggregate tables yet, merged per tenant, so an aggregate read adds
/// them to what it reads from the tables instead of folding first (``UnfoldedLog`` is the
/// SQLite reader's; its doc says why merging is exact).
///
/// What differs from SQLite: several writers (every collector of a cluster) insert log rows at
/// once, so row ids are not in commit order — a row with a smaller id than one already merged
/// can commit later. The reader therefore keeps the set of rows it merged, not the last one,
/// and each read merges the snapshot's rows missing from that set. A fold deletes rows and
/// bumps the fold generation in one transaction, so within one generation the snapshot's rows
/// only grow; a new generation (or a merged row gone) starts the reader over.
///
/// Each row is decoded once per generation, every tenant's cells at once (the rows are in the
/// flat layout, which the fold also decodes whole), and its reconciliation counts with them: on
/// PostgreSQL those travel through the log too (``ReconciliationLogCodec``). Bounded by the log: writers fold every
/// thousand batches and the collector every few seconds.
struct PostgresUnfoldedLog {
    /// The fold generation the merged cells belong to (nil before the first read).
    private(set) var generation: Int64?
    /// The log rows merged in this generation.
    private var merged: Set<Int64> = []
    /// Every tenant's merged cells.
    private var tenants: [String: UnfoldedCells] = [:]
    /// The merged rows' reconciliation counts, summed per (period, tenant, agent).
    private(set) var reconciliation: [ReconciliationLogCodec.Key: ReconciliationCounts] = [:]

    /// The rows of `ids` (a snapshot's whole log, at fold generation `generation`) not merged
    /// yet; starts over first when the fold generation moved or a merged row is gone.
    mutating func rowsToMerge(generation: Int64, ids: [Int64]) -> [Int64] {
        if generation != self.generation || !merged.isSubset(of: ids) {
            self = PostgresUnfoldedLog()
            self.generation = generation
        }
        return ids.filter { !merged.contains($0) }
    }

    /// Merges log row `id`; `cells` calls its body once per cell, of every tenant, and
    /// `counts` adds the row's reconciliation counts to the sums it is given.
    mutating func add(
        row id: Int64, _ cells: LogRowCells,
        counts: (inout [ReconciliationLogCodec.Key: ReconciliationCounts]) throws(LedgerError) -> Void = { _ throws(LedgerError) in }
    ) throws(LedgerError) {
        guard merged.insert(id).inserted else { throw .corruptRow("aggregate log row \(id) merged twice") }
        try cells { (key, aggregate) throws(LedgerError) in try tenants[key.tenant, default: UnfoldedCells()].add(aggregate, at: key) }
        try counts(&reconciliation)
    }

    /// The merged cells of `tenant`, nil if none.
    func cells(of tenant: String) -> UnfoldedCells? {
        guard let cells = tenants[tenant], !cells.isEmpty else { return nil }
        return cells
    }

    /// How many log rows are merged (tests).
    var rowCount: Int { merged.count }
}
