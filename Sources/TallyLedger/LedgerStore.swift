public import TallyCore

/// The ledger: every event a collector receives, kept for audit, deduplicated, aggregated and
/// reconciled. This is the seam between the collector (and `tallyctl`) and its database — ingest,
/// billing reads, final invoices and export records, with no downcasts. Two backends implement
/// it, the embedded SQLite store and the shared PostgreSQL one, and both pass
/// `LedgerContractTests`. What a batch becomes is decided by ``LedgerRules`` (pure); a backend
/// only persists the plan. ``LedgerStores/open(_:configuration:logger:)`` opens either from its
/// address.
///
/// Guarantees every backend gives:
/// - ``commit(_:)`` is all-or-nothing: raw events, duplicate and refusal records, aggregate
///   updates, reconciliation counters and the batch record are written in one transaction (the
///   aggregate cells and the counters may go to a log in it, folded later: every read sees them).
/// - A batch already committed (same agent and sequence) writes nothing and returns an outcome
///   equal to the first one.
/// - Each logical event (same ``Fingerprint``) is billed at most once; every event received is
///   counted in exactly one of accepted, duplicate, late or rejected, per agent, tenant and period.
/// - Quantities are exact; a sum that would leave the 128-bit range is an error, never a wrap.
///
/// Calls block; run a store on a dedicated thread (the collector's `Ledger`). A store is
/// not safe to share between threads; several stores may share one ledger (a cluster's
/// collectors, `tallyctl audit` beside a collector).
public protocol LedgerStore: AnyObject, BillableUsageSource {
    var configuration: LedgerConfiguration { get }

    /// Commits one batch in one transaction, or returns the stored outcome of a batch seen before.
    func commit(_ batch: PreparedBatch) throws(LedgerError) -> BatchOutcome

    /// Commits `batches`, in order, each as ``commit(_:)`` would, and returns each one's
    /// outcome or error (one per batch, in order). A store may commit them in one transaction
    /// (one fsync for all); one batch's error never fails the others. The default commits them
    /// one by one.
    func commit(_ batches: [PreparedBatch]) -> [Result<BatchOutcome, LedgerError>]

    /// Bounds the dedupe and batch-record structures to the dedupe horizon before `now`.
    /// Raw events are kept forever.
    @discardableResult
    func prune(now: EventTime) throws(LedgerError) -> PruneReport

    /// Calls `body` with (bucket's first hour, dimension value, aggregate) for every stored cell
    /// of one tenant, metric and dimension ("" for the totals) whose hour lies in `hours`, each
    /// read from the coarsest table (no coarser than `coarsest`) that answers it exactly: a
    /// month-to-date question reads one monthly row per group. `billing` restricts the period
    /// the cells are billed in (nil: every billing). Sees every committed batch (folds first).
    func forEachCell(
        tenant: String, metric: String, dimension: String, hours: Range<Int64>, coarsest: AggregateGrain,
        billing: BillingSelection?, _ body: (Int64, String, UsageAggregate) throws(LedgerError) -> Void
    ) throws(LedgerError)

    /// A period's normal usage and the adjustments billed in it, from the hourly aggregates.
    func periodTotals(tenant: String, metric: String, period: BillingPeriod) throws(LedgerError) -> PeriodTotals

    /// The exact number of distinct values of a configured (metric, property) pair in a period.
    func uniqueCount(
        tenant: String, metric: String, property: String, period: BillingPeriod
    ) throws(LedgerError)
        -> UniqueCount

    /// Calls `body` with every stored reconciliation row matching the filter — period as stored,
    /// tenant, agent, counts — ordered by (period, tenant, agent) in byte order. Readers go through
    /// ``reconciliation(_:)`` and ``unreadableReconciliation(_:)``.
    func readReconciliation(
        _ filter: ReconciliationFilter, _ body: (String, String, String, ReconciliationCounts) -> Void
    ) throws(LedgerError)

    /// Every stored aggregate cell of `grain` whose bucket starts in `period`, for one tenant
    /// (nil: every tenant), for audits. For day and month cells, the key's `hour` is the
    /// bucket's first hour.
    func storedAggregates(
        tenant: String?, period: BillingPeriod, grain: AggregateGrain
    ) throws(LedgerError)
        -> [AggregateCellKey: UsageAggregate]

    /// Calls `body` for every raw ledger event of `tenant` (nil: every tenant) whose event time
    /// lies in `period`, in (timestamp, fingerprint) order: accepted, adjusted and late events.
    /// Duplicates and refused events are recorded beside them (see ``refusedEvents(agent:sequence:)``).
    func scanRawEvents(
        tenant: String?, period: BillingPeriod, _ body: (LedgerRecord) throws(LedgerError) -> Void
    ) throws(LedgerError)

    /// A level series' stored rows (``Levels``) around `first ... last`, sorted by key: the last
    /// before `first`, every one from `first` to `last`, the first after `last`.
    func levelNeighbourhood(_ series: Levels.Series, _ first: RawKey, _ last: RawKey) throws(LedgerError) -> [Levels.Row]

    /// The refused (rejected) and duplicate events of one batch, by index.
    func refusedEvents(agent: String, sequence: UInt64) throws(LedgerError) -> [RefusedEvent]

    /// The raw events, their later copies (duplicates) and the refused arrivals that a trace
    /// asks for (``TraceQuery``), each list in ``TraceRecords``' order.
    func traceRecords(_ query: TraceQuery) throws(LedgerError) -> TraceRecords

    /// Applies corrections (``CorrectionRequest``) in one transaction, all or none: each one's
    /// record and aggregate cells. A request whose key is stored returns the stored record (the
    /// same request again) or is refused (another request under that key).
    func applyCorrections(_ requests: [CorrectionRequest], now: EventTime) throws(LedgerError) -> [CorrectionRecord]

    /// Stored corrections matching the filter, in the order they were made.
    func corrections(_ filter: CorrectionFilter) throws(LedgerError) -> [CorrectionRecord]

    /// Inserts or replaces the record of one backfill (by its id).
    func saveBackfill(_ record: BackfillRecord) throws(LedgerError)

    /// Every backfill record, by start time.
    func backfills() throws(LedgerError) -> [BackfillRecord]

    /// True when some committed batches' aggregate cells are not in the aggregate tables yet
    /// (a read folds them in first, which writes). Cheap; lets a read-only connection answer
    /// only when it can do so without writing.
    func hasUnfoldedAggregates() throws(LedgerError) -> Bool

    /// Folds every committed batch's logged cells into the aggregate tables now (reads do it
    /// first anyway; the collector also does it on a schedule, so reads seldom have to).
    func foldAggregates() throws(LedgerError)

    /// ``foldAggregates()`` on the collector's schedule. Where several processes fold one log
    /// (PostgreSQL), it returns at once when another is folding — that fold takes everything
    /// logged before it, the rest waits for the next interval — instead of holding a writer
    /// (and its commits) until the other fold ends.
    func foldAggregatesUnlessFolding() throws(LedgerError)

    /// Runs `body` (reads only) against one consistent snapshot of the ledger: a commit by
    /// another connection in the middle is either wholly visible or not at all.
    func withSnapshot<T>(_ body: () throws(LedgerError) -> T) throws(LedgerError) -> T

    /// Makes this store a reader whose aggregate reads inside ``withSnapshot(_:)`` never fold
    /// (write): they add the snapshot's unfolded log cells to the tables' rows instead, so a
    /// read never waits for the writer. Returns false for a backend that cannot; its reads
    /// fold first, as before.
    func mergeUnfoldedLogOnRead() -> Bool

    /// Closes the store. Uncommitted work is discarded.
    func close()

    /// True when a call waits on the network (a database server), so callers keep it off
    /// threads that must not block for long; false for an embedded store.
    var readsWaitOnNetwork: Bool { get }

    /// What does a commit's pure steps ahead of it, off the writer thread (nil: the store does
    /// them itself). Asked once, before the store is handed to its writer thread.
    func batchSpeculator() -> BatchSpeculator?

    /// What merges the writer's committed aggregate-log cells into its in-memory copy of the
    /// log, on whichever thread calls it (nil: the store has no such copy, or merges itself).
    /// Asked once, before the store is handed to its writer thread.
    func logMerger() -> LogMerger?

    /// What checkpoints the store's write-ahead log on a thread of its own, so that its commits
    /// never do (nil: the store has no such log, or checkpoints it itself). Asked once, before the
    /// store is handed to its writer thread; the store stops it when it closes.
    func walCheckpointer() -> WALCheckpointer?

    // MARK: Billing: the aggregate reads invoices are priced from, and the tables the collector
    // owns for billing — final invoices (frozen JSON and its SHA-256) and the record of usage
    // exported to billing platforms.

    /// The number of distinct values of a configured unique-count pair whose own period is
    /// `period`, counting values billed in `period` itself and, when `adjustmentsThrough` is
    /// given, values billed as adjustments up to and including that later period.
    func distinctValues(
        tenant: String, metric: String, property: String, period: BillingPeriod, billedThrough: BillingPeriod
    ) throws(LedgerError) -> Int

    /// Earlier periods that have late usage billed (as adjustments) in `period`, in order.
    func adjustedPeriods(tenant: String, billedIn period: BillingPeriod) throws(LedgerError) -> [BillingPeriod]

    /// Hourly total cells (every billing, merged) of one tenant and metric in `hours`, in hour order.
    func hourlyTotals(tenant: String, metric: String, hours: Range<Int64>) throws(LedgerError) -> [(hour: Int64, aggregate: UsageAggregate)]

    /// Tenants with any reconciliation row in `period` (every tenant the ledger saw in it), sorted.
    func tenants(in period: BillingPeriod) throws(LedgerError) -> [String]

    /// Whether the ledger ever received an event for `tenant`, in any period and whatever became
    /// of it (it has a reconciliation row). `period` is looked at first: one index probe when
    /// the tenant has events there.
    func hasSeen(tenant: String, lookingFirstIn period: BillingPeriod) throws(LedgerError) -> Bool

    /// The frozen invoice of (tenant, period), if it was finalised.
    func finalInvoice(tenant: String, period: BillingPeriod) throws(LedgerError) -> FinalInvoiceRecord?

    /// Stores `record` unless a final invoice of its (tenant, period) exists; returns the stored
    /// one either way, so a final invoice, once written, never changes.
    func freezeInvoice(_ record: FinalInvoiceRecord) throws(LedgerError) -> FinalInvoiceRecord

    /// The export record of one identifier, if it was ever attempted.
    func exportRecord(identifier: String) throws(LedgerError) -> ExportRecord?

    /// Inserts or replaces the record of one export identifier.
    func saveExportRecord(_ record: ExportRecord) throws(LedgerError)

    /// Inserts `record` unless a record of its identifier exists, and says whether this call
    /// inserted it. The claim of a new export: when several collectors plan the same export at
    /// once, exactly one claims each identifier and the others keep the stored record.
    func claimExportRecord(_ record: ExportRecord) throws(LedgerError) -> Bool

    /// Every export record of a tenant (nil: all), by identifier.
    func exportRecords(tenant: String?) throws(LedgerError) -> [ExportRecord]

    // MARK: Usage alerts (``AlertRecord``)

    /// Inserts `record` unless a record of its identifier (tenant, alert, period) exists, and
    /// says whether this call inserted it: of several collectors finding the same crossing, one
    /// claims it, and a threshold alerts once per period.
    func claimAlert(_ record: AlertRecord) throws(LedgerError) -> Bool

    /// Takes the next attempt of a pending record whose ``AlertRecord/nextAttemptAt`` has come:
    /// counts the attempt, notes `now` as its time and moves `nextAttemptAt` to `until` (the
    /// lease: no one else sends it before then), in one statement. The record as leased, or nil
    /// when it is delivered, not due, or leased by another collector.
    func leaseAlert(identifier: String, now: EventTime, until: EventTime) throws(LedgerError) -> AlertRecord?

    /// Records how a leased attempt ended: delivered at `at`, or still pending until
    /// `nextAttemptAt`, with the receiver's answer (`error`) either way.
    func finishAlertAttempt(identifier: String, delivered: Bool, at: EventTime, error: String?, nextAttemptAt: EventTime) throws(LedgerError)

    /// Pending records due by `now`, oldest crossing first, at most `limit`.
    func dueAlerts(now: EventTime, limit: Int) throws(LedgerError) -> [AlertRecord]

    /// Every alert record, of one tenant and one period when given, by period, tenant and alert.
    func alertRecords(tenant: String?, period: BillingPeriod?) throws(LedgerError) -> [AlertRecord]

    // MARK: The admin overview: every tenant of a period at once, and the agents.

    /// Every tenant the period has — a reconciliation row in it, or late usage of an earlier
    /// period billed in it — whose name matches the query's search, in byte order, each with
    /// its monthly cells of the query's kinds (by event time, every billing; merged with a
    /// reader's unfolded log), the own-period distinct values of the query's unique-count pairs,
    /// and whether adjustments are billed in the period. A few statements whatever the number of
    /// tenants (one per kind of cell at most), never one per tenant.
    func periodUsage(_ query: PeriodUsageQuery) throws(LedgerError) -> [TenantPeriodUsage]

    /// Every agent with a batch record (or a pruned one), in byte order: its last sequence, when
    /// its last recorded batch was committed, and the events of its recorded batches.
    func agentActivity() throws(LedgerError) -> [AgentActivity]
}

extension LedgerStore {
    public var readsWaitOnNetwork: Bool { false }

    public func batchSpeculator() -> BatchSpeculator? { nil }

    public func logMerger() -> LogMerger? { nil }

    public func walCheckpointer() -> WALCheckpointer? { nil }

    public func mergeUnfoldedLogOnRead() -> Bool { false }

    /// One process folds the log: nobody else can be folding.
    public func foldAggregatesUnlessFolding() throws(LedgerError) { try foldAggregates() }

    /// Usage of one tenant and metric over a time range, from the aggregates.
    public func usage(_ query: UsageQuery) throws(LedgerError) -> [UsageBucket] {
        if let group = query.groupBy, !configuration.groupBy(of: query.metric).contains(group) {
            throw .invalidConfiguration(
                "'\(group)' is not a configured group-by property of \(query.metric) (configured: \(configuration.groupBy(of: query.metric)))")
        }
        let coarsest: AggregateGrain =
            switch query.granularity {
            case .hour: .hour
            case .day: .day
            case .month: .month
            }
        var buckets: [UsageBucketKey: UsageAggregate] = [:]
        let from = query.from.firstHourAtOrAfter
        try forEachCell(
            tenant: query.tenant, metric: query.metric, dimension: query.groupBy ?? "",
            hours: from..<max(from, query.to.firstHourAtOrAfter), coarsest: coarsest, billing: nil
        ) { (hour: Int64, value: String, aggregate: UsageAggregate) throws(LedgerError) in
            let start = query.bucketStart(of: EventTime(startOfHour: hour))
            try buckets.merge(aggregate, at: UsageBucketKey(start: start, group: query.groupBy == nil ? nil : value))
        }
        return buckets.sorted { ($0.key.start, $0.key.group ?? "") < ($1.key.start, $1.key.group ?? "") }.map {
            UsageBucket(start: $0.key.start, group: $0.key.group, aggregate: $0.value)
        }
    }

    /// Aggregate cells of one tenant and metric whose hour lies in `hours`, for one dimension
    /// ("" for the totals), merged per dimension value, restricted by `billing`.
    public func billableAggregates(
        tenant: String, metric: String, hours: Range<Int64>, dimension: String, billing: BillingSelection
    ) throws(LedgerError) -> [String: UsageAggregate] {
        var result: [String: UsageAggregate] = [:]
        try forEachCell(tenant: tenant, metric: metric, dimension: dimension, hours: hours, coarsest: .month, billing: billing) {
            (_: Int64, value: String, aggregate: UsageAggregate) throws(LedgerError) in
            try result.merge(aggregate, at: value)
        }
        return result
    }

    /// Reconciliation rows (one per period, tenant and agent) matching the filter. A stored row
    /// whose period does not read back as `YYYY-MM` is left out here and returned by
    /// ``unreadableReconciliation(_:)``, so that no stored row can stop a reader.
    public func reconciliation(_ filter: ReconciliationFilter) throws(LedgerError) -> [ReconciliationRow] {
        var rows: [ReconciliationRow] = []
        try readReconciliation(filter) { periodText, tenant, agent, counts in
            guard let period = BillingPeriod(periodText) else { return }
            rows.append(ReconciliationRow(period: period, tenant: tenant, agent: agent, counts: counts))
        }
        return rows
    }

    /// Stored reconciliation rows matching the filter's tenant and agent whose period does not
    /// read back (written before event times were bounded, e.g. `0000-06`, or edited by hand),
    /// with their counts: readers report them instead of failing. None when the filter names a
    /// period.
    public func unreadableReconciliation(_ filter: ReconciliationFilter) throws(LedgerError) -> [UnreadableReconciliationRow] {
        guard filter.period == nil else { return [] }
        var rows: [UnreadableReconciliationRow] = []
        try readReconciliation(filter) { periodText, tenant, agent, counts in
            guard BillingPeriod(periodText) == nil else { return }
            rows.append(UnreadableReconciliationRow(storedPeriod: periodText, tenant: tenant, agent: agent, counts: counts))
        }
        return rows
    }

    /// One by one, each in its own transaction.
    public func commit(_ batches: [PreparedBatch]) -> [Result<BatchOutcome, LedgerError>] { commitOneByOne(batches) }

    /// Each of `batches` committed alone (``commit(_:)-(PreparedBatch)``), in order.
    public func commitOneByOne(_ batches: [PreparedBatch]) -> [Result<BatchOutcome, LedgerError>] {
        batches.map { batch in Result { () throws(LedgerError) in try commit(batch) } }
    }

    /// Prepares `batch` (with the speculation the collector's preparation threads make) and
    /// commits it.
    public func commit(_ batch: IncomingBatch) throws(LedgerError) -> BatchOutcome {
        let prepared = PreparedBatch(batch)
        return try commit(batchSpeculator()?.speculate(prepared) ?? prepared)
    }

    /// Every stored hourly aggregate cell whose hour lies in `period`, for one tenant.
    public func storedAggregates(tenant: String, period: BillingPeriod) throws(LedgerError) -> [AggregateCellKey: UsageAggregate] {
        try storedAggregates(tenant: tenant, period: period, grain: .hour)
    }

    /// Recomputes the aggregates of `tenant` (nil: every tenant, in one pass over the period's
    /// raw events, plus the corrections of its events) for `period` from the raw ledger — hourly, and the daily and monthly rollups
    /// that queries and invoices read — and compares them with the stored ones. An empty
    /// ``AggregateDrift/differences`` means they all agree exactly.
    ///
    /// Level changes (`weighted_sum` metrics, ``Levels``) are compared per hour, day and month
    /// summed over the periods they are billed in: which period bills a change depends on the
    /// order events arrived in, their sum only on the events.
    public func recomputeAggregates(tenant: String?, period: BillingPeriod) throws(LedgerError) -> AggregateDrift {
        var expected = AggregateCells()
        let configuration = self.configuration
        var stored: [AggregateGrain: [AggregateCellKey: UsageAggregate]] = [:]
        for grain in AggregateGrain.allCases {
            // Cells of a dimension the metric is no longer aggregated by (written under an older
            // configuration) are left out: no read can ask for them, and they would be drift.
            stored[grain] = try storedAggregates(tenant: tenant, period: period, grain: grain).filter { key, _ in
                key.dimension.isEmpty || configuration.groupBy(of: key.metric).contains(key.dimension)
            }
        }
        // The configured level metrics, and any whose stored cells hold level changes (an audit
        // without the pricing file).
        var levelMetrics = configuration.levelMetrics
        for (key, cell) in stored[.hour] ?? [:] where cell.levelDelta != .zero || cell.levelTime != .zero { levelMetrics.insert(key.metric) }
        var levelRows: [Levels.Series: [Levels.Row]] = [:]
        try scanRawEvents(tenant: tenant, period: period) { (record: LedgerRecord) throws(LedgerError) in
            let groupBy = configuration.groupBy(of: record.event.metric)
            if record.status == .accepted || record.status == .adjusted, levelMetrics.contains(record.event.metric) {
                levelRows[Levels.Series(tenant: record.event.tenant, metric: record.event.metric), default: []].append(
                    Levels.Row(key: RawKey(timestamp: record.event.timestamp, fingerprint: record.fingerprint), quantity: record.event.quantity))
            }
            switch record.status {
            case .accepted:
                try expected.add(
                    record.event, fingerprint: record.fingerprint, billedIn: nil, groupBy: groupBy,
                    keepsMinimum: configuration.keepsMinimum(record.event.metric))
            case .adjusted:
                try expected.add(
                    record.event, fingerprint: record.fingerprint, billedIn: record.billedIn, groupBy: groupBy,
                    keepsMinimum: configuration.keepsMinimum(record.event.metric))
            case .late, .duplicate, .rejected: break
            }
        }
        // Corrections are ledger records too: their cells, as applied.
        for correction in try corrections(CorrectionFilter(tenant: tenant, eventTimes: period.start..<period.end)) {
            try expected.merge(
                CorrectionRules.cells(
                    of: correction, groupBy: configuration.groupBy(of: correction.metric),
                    keepsMinimum: configuration.keepsMinimum(correction.metric)))
        }
        var expectedLevels: [AggregateCellKey: UsageAggregate] = [:]
        for (series, rows) in levelRows {
            guard let first = rows.map(\.key).min() else { continue }
            let before = try levelNeighbourhood(series, first, first).last { $0.key < first }
            try Levels.finalChanges(of: rows, after: before, into: &expectedLevels, series: series)
        }
        var differences: [AggregateDrift.Difference] = []
        var compared = 0
        for grain in AggregateGrain.allCases {
            let want = try expected.rolledUp(to: grain).cells
            var stored = stored[grain] ?? [:]
            // Level changes: out of the cells, compared summed per bucket below; a cell that only
            // held level changes (no event of its own) is then nothing to compare.
            var storedLevels: [AggregateCellKey: UsageAggregate] = [:]
            for (key, cell) in stored where levelMetrics.contains(key.metric) {
                var bucket = key
                bucket.billedIn = nil
                if cell.levelDelta != .zero || cell.levelTime != .zero {
                    try storedLevels.merge(.levelChange(delta: cell.levelDelta, time: cell.levelTime), at: bucket)
                }
                var rest = cell
                rest.levelDelta = .zero
                rest.levelTime = .zero
                stored[key] = rest.count == 0 && want[key] == nil ? nil : rest
            }
            var wantLevels: [AggregateCellKey: UsageAggregate] = [:]
            for (key, change) in expectedLevels { try wantLevels.merge(change, at: key.rolledUp(to: grain)) }
            wantLevels = wantLevels.filter { $0.value.levelDelta != .zero || $0.value.levelTime != .zero }
            for key in Set(wantLevels.keys).union(storedLevels.keys) where wantLevels[key] != storedLevels[key] {
                differences.append(.init(grain: grain, key: key, recomputed: wantLevels[key], stored: storedLevels[key]))
            }
            compared += want.count
            for key in Set(want.keys).union(stored.keys) {
                var recomputed = want[key]
                // A minimum not recorded (a cell written before Tally kept minimums) is not drift;
                // everything else of the cell must still agree.
                if let cell = stored[key], cell.min == nil { recomputed?.min = nil }
                if recomputed != stored[key] {
                    differences.append(.init(grain: grain, key: key, recomputed: want[key], stored: stored[key]))
                }
            }
        }
        differences.sort { ($0.grain, $0.key) < ($1.grain, $1.key) }
        return AggregateDrift(tenant: tenant, period: period, cellsCompared: compared, differences: differences)
    }
}

/// A bucket of a usage answer: its start and group.
private struct UsageBucketKey: Hashable {
    var start: EventTime
    var group: String?
}
