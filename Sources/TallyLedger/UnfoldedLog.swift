import TallyCore

/// The aggregate log as a reader holds it: the cells of the logged batches that no fold has
/// written into the aggregate tables yet, merged per tenant, so a read adds them to what it
/// reads from the tables instead of asking the writer to fold first (issue 12: reads never wait
/// behind ingest).
///
/// **Why it is exact.** A batch commits its cells as one log row in its own transaction; a fold
/// moves every row it read into the tables, deletes them and bumps the fold generation, all in
/// one transaction. So within one read snapshot, every acknowledged batch's cells are either in
/// the tables or in the log, never both and never neither; the read sees the tables and the log
/// of the same snapshot (see ``start(generation:)``). Within a generation the log only grows, by
/// rows with ids above every earlier one, so the reader keeps what it merged and reads only the
/// rows after the last one it merged; a new generation means a fold happened, and the reader
/// starts over (the log is then usually empty or short: a fold takes everything logged before it).
///
/// Merging is exact because ``UsageAggregate/merge(_:)`` is (sums and counts add, max and latest
/// pick), and the order of merges does not change the result.
///
/// Bounded by the log: the writer folds when the log holds ``LedgerConfiguration/aggregateBufferCells``
/// distinct cells (or eight times as many logged ones, or a thousand batches), and the
/// collector's upkeep folds what an idle collector left (every minute on SQLite, every 5 s on
/// PostgreSQL); only tenants that were read are kept.
/// One log row's cells, handed to a body one at a time (the row's decoder, run by the merge).
typealias LogRowCells = ((AggregateCellKey, UsageAggregate) throws(LedgerError) -> Void) throws(LedgerError) -> Void

struct UnfoldedLog {
    /// The fold generation the merged cells belong to (nil before the first read).
    private(set) var generation: Int64?
    /// Per tenant read so far: its merged cells and the last log row merged for it. A tenant
    /// is brought up to date when a read asks for it, from the rows after its own last one —
    /// the log's rows are sectioned by tenant (`AggregateLogCodec`), so that decodes only its
    /// cells.
    private var tenants: [String: UnfoldedCells] = [:]

    /// Starts a read that sees fold generation `generation`.
    mutating func start(generation: Int64) {
        guard generation != self.generation else { return }
        tenants.removeAll()
        self.generation = generation
    }

    /// The id of the last log row merged for `tenant` (0: none yet in this generation).
    func lastRow(of tenant: String) -> Int64 { tenants[tenant]?.lastRow ?? 0 }

    /// Merges `tenant`'s cells of log row `id`; `cells` calls its body once per cell.
    mutating func add(row id: Int64, tenant: String, _ cells: LogRowCells) throws(LedgerError) {
        guard id > lastRow(of: tenant) else { throw .corruptRow("aggregate log row \(id) read after row \(lastRow(of: tenant))") }
        try tenants[tenant, default: UnfoldedCells()].add(row: id, cells)
    }

    /// The merged cells of `tenant`, nil if none.
    func cells(of tenant: String) -> UnfoldedCells? {
        guard let cells = tenants[tenant], !cells.isEmpty else { return nil }
        return cells
    }

    /// Forgets everything: the next read starts from the first row.
    mutating func reset() { self = UnfoldedLog() }
}

/// Unfolded hourly cells, merged, by metric; and the last log row merged.
struct UnfoldedCells {
    private(set) var lastRow: Int64 = 0
    private var byMetric: [String: AggregateCells] = [:]

    var isEmpty: Bool { byMetric.isEmpty }

    mutating func add(row id: Int64, _ cells: LogRowCells) throws(LedgerError) {
        try cells { (key, aggregate) throws(LedgerError) in try add(aggregate, at: key) }
        lastRow = id
    }

    /// Merges one cell (``lastRow`` is left as it is).
    mutating func add(_ aggregate: UsageAggregate, at key: AggregateCellKey) throws(LedgerError) {
        try byMetric[key.metric, default: AggregateCells()].add(aggregate, at: key)
    }

    /// Every cell of `metric` (every metric if nil) that `include` accepts.
    func forEach(
        metric: String? = nil, where include: (AggregateCellKey) -> Bool,
        _ body: (AggregateCellKey, UsageAggregate) throws(LedgerError) -> Void
    ) throws(LedgerError) {
        let groups: [AggregateCells] = if let metric { byMetric[metric].map { [$0] } ?? [] } else { Array(byMetric.values) }
        for group in groups {
            for (key, aggregate) in group.cells where include(key) { try body(key, aggregate) }
        }
    }
}

extension BillingSelection {
    /// Whether a cell billed in `billedIn` (nil: its own period) is selected: the rule the
    /// stores' queries apply to `billed_in` ('' for the own period, below every period).
    func includes(_ billedIn: BillingPeriod?) -> Bool {
        switch self {
        case .ownPeriod: billedIn == nil
        case .adjustmentsIn(let period): billedIn == period
        case .billedBefore(let period): billedIn.map { $0 < period } ?? true
        case .billedThrough(let period): billedIn.map { $0 <= period } ?? true
        }
    }
}

/// The merges both backends' aggregate reads make, one per read, so that they agree.
extension UnfoldedCells {
    /// `forEachCell`'s unfolded part: hourly cells of `metric` and `dimension` in `hours` whose
    /// billing `selection` includes them, whatever grain the tables were read at (every caller
    /// merges by its own bucket, and a cell's hour lies in the same bucket as its day's or
    /// month's row).
    func forEachCell(
        metric: String, dimension: String, hours: Range<Int64>, billing selection: BillingSelection?,
        _ body: (Int64, String, UsageAggregate) throws(LedgerError) -> Void
    ) throws(LedgerError) {
        try forEach(metric: metric) { key in
            key.dimension == dimension && hours.contains(key.hour) && (selection?.includes(key.billedIn) ?? true)
        } _: { (key, aggregate) throws(LedgerError) in
            try body(key.hour, key.value, aggregate)
        }
    }

    /// `periodTotals`' unfolded part: the adjustments of `metric` billed in `period`, merged
    /// into `adjustments` by the period the events happened in.
    func mergeAdjustments(
        of metric: String, billedIn period: BillingPeriod, into adjustments: inout [BillingPeriod: UsageAggregate]
    ) throws(LedgerError) {
        try forEach(metric: metric) { key in
            key.billedIn == period && key.dimension.isEmpty
        } _: { (key, aggregate) throws(LedgerError) in
            try adjustments.merge(aggregate, at: BillingPeriod(containingHour: key.hour))
        }
    }

    /// `adjustedPeriods`' answer: the `stored` periods and those of the unfolded adjustments
    /// billed in `period`, in order.
    func adjustedPeriods(adding stored: some Sequence<BillingPeriod>, billedIn period: BillingPeriod) throws(LedgerError) -> [BillingPeriod] {
        var periods = Set(stored)
        try forEach { key in
            key.billedIn == period && key.dimension.isEmpty
        } _: { key, _ in
            periods.insert(BillingPeriod(containingHour: key.hour))
        }
        return periods.sorted()
    }

    /// `hourlyTotals`' answer: the `stored` totals (in hour order) with the unfolded cells of
    /// `metric` in `hours` (no dimension) merged in, in hour order.
    func hourlyTotals(
        adding stored: [(hour: Int64, aggregate: UsageAggregate)], metric: String, hours: Range<Int64>
    ) throws(LedgerError) -> [(hour: Int64, aggregate: UsageAggregate)] {
        var byHour: [Int64: UsageAggregate] = [:]
        for (hour, aggregate) in stored { byHour[hour] = aggregate }
        try forEach(metric: metric) { key in
            key.dimension.isEmpty && hours.contains(key.hour)
        } _: { (key, aggregate) throws(LedgerError) in
            try byHour.merge(aggregate, at: key.hour)
        }
        return byHour.sorted { $0.key < $1.key }.map { (hour: $0.key, aggregate: $0.value) }
    }
}
