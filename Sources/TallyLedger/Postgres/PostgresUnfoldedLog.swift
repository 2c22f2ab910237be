/// The aggregate log as a PostgreSQL reader holds it: the logged batches' rows that no fold has
/// written into the aggregate tables yet, so an aggregate read adds their cells to what it reads
/// from the tables instead of folding first (``UnfoldedLog`` is the SQLite reader's; its doc
/// says why merging is exact).
///
/// What differs from SQLite: several writers (every collector of a cluster) insert log rows at
/// once, so row ids are not in commit order — a row with a smaller id than one already taken
/// can commit later. The reader therefore keeps the set of rows it took, not the last one, and
/// each read takes the snapshot's rows missing from that set. A fold deletes rows and bumps the
/// fold generation in one transaction, so within one generation the snapshot's rows only grow;
/// a new generation (or a taken row gone) starts the reader over.
///
/// A row is fetched once per generation and kept as its bytes, with where each tenant's
/// section lies (the rows are sectioned by tenant, `AggregateLogCodec`); a read decodes only
/// its own tenant's sections, those taken since that tenant's last read. Its reconciliation
/// counts (on PostgreSQL those travel through the log, ``ReconciliationLogCodec``) are summed
/// when the row is taken. Decoding every tenant's cells of every row, as this reader did
/// before, cost a dashboard polling one tenant during a full-speed cluster drain about 7% of
/// the machine (`tally-bench cluster`, perf). Bounded by the log: writers fold every thousand
/// batches and the collector every few seconds.
struct PostgresUnfoldedLog {
    /// The fold generation of the rows taken (nil before the first read).
    private(set) var generation: Int64?
    /// The ids of the rows taken in this generation.
    private var taken: Set<Int64> = []
    /// The taken rows' cells, sectioned by tenant, in the order they were taken.
    private var rows: [[UInt8]] = []
    /// Per tenant, its sections in ``rows``, in the order the rows were taken.
    private var sections: [String: [Section]] = [:]
    /// Per tenant read so far: its cells merged from its first `merged` sections.
    private var tenants: [String: (cells: UnfoldedCells, merged: Int)] = [:]
    /// The taken rows' reconciliation counts, summed per (period, tenant, agent).
    private(set) var reconciliation = ReconciliationSums()

    /// One tenant's cells in a taken row.
    private struct Section {
        var row: Int
        var location: AggregateLogCodec.SectionLocation
    }

    /// The rows of `ids` (a snapshot's whole log, at fold generation `generation`) not taken
    /// yet; starts over first when the fold generation moved or a taken row is gone.
    mutating func rowsToMerge(generation: Int64, ids: [Int64]) -> [Int64] {
        if generation != self.generation || !taken.isSubset(of: ids) {
            self = PostgresUnfoldedLog()
            self.generation = generation
        }
        return ids.filter { !taken.contains($0) }
    }

    /// Takes log row `id`: its `cells` bytes (any layout; a flat row, as collectors before this
    /// one wrote, is sectioned here) and, through `counts`, its reconciliation counts.
    mutating func add(
        row id: Int64, cells: [UInt8],
        counts: (inout ReconciliationSums) throws(LedgerError) -> Void = { _ throws(LedgerError) in }
    ) throws(LedgerError) {
        guard !taken.contains(id) else { throw .corruptRow("aggregate log row \(id) merged twice") }
        var row = cells
        var located: [(tenant: String, location: AggregateLogCodec.SectionLocation)] = []
        if try !Self.locate(row, into: &located) {
            var all = AggregateCells()
            try AggregateLogCodec.decode(row, into: &all)
            row = AggregateLogCodec.encode(all, layout: .byTenant)
            guard try Self.locate(row, into: &located) else { throw .corruptRow("aggregate log row \(id): sectioning it failed") }
        }
        try counts(&reconciliation)
        taken.insert(id)
        rows.append(row)
        for (tenant, location) in located { sections[tenant, default: []].append(Section(row: rows.count - 1, location: location)) }
    }

    /// Appends where each tenant's section lies in `row` to `located`; false for a flat row.
    private static func locate(
        _ row: [UInt8], into located: inout [(tenant: String, location: AggregateLogCodec.SectionLocation)]
    ) throws(LedgerError) -> Bool {
        try row.withUnsafeBytes { bytes in
            Result { () throws(LedgerError) in
                try AggregateLogCodec.sections(of: bytes) { (name, location) in
                    located.append((String(decoding: name, as: UTF8.self), location))
                }
            }
        }.get()
    }

    /// The merged cells of `tenant`, nil if none: its sections taken since its last read are
    /// decoded and merged first.
    mutating func cells(of tenant: String) throws(LedgerError) -> UnfoldedCells? {
        let own = sections[tenant] ?? []
        var (cells, merged) = tenants.removeValue(forKey: tenant) ?? (UnfoldedCells(), 0)
        for section in own[merged...] {
            try rows[section.row].withUnsafeBytes { bytes in
                Result { () throws(LedgerError) in
                    try AggregateLogCodec.decode(bytes, section: section.location, tenant: tenant) {
                        (key, aggregate) throws(LedgerError) in try cells.add(aggregate, at: key)
                    }
                }
            }.get()
        }
        merged = own.count
        tenants[tenant] = (cells, merged)
        return cells.isEmpty ? nil : cells
    }

    /// How many log rows are taken (tests).
    var rowCount: Int { taken.count }
}
