public import TallyCore

/// How a ledger classifies, dedupes and aggregates. Validated when a store opens.
public struct LedgerConfiguration: Sendable, Hashable {
    /// Grace window, late-arrival limit, future skew and late policy.
    public var lateWindow: LateWindow
    /// How long dedupe information and batch records are kept. Never shorter than the
    /// late-arrival limit, so that no retry of a billable event can be billed twice.
    public var dedupeHorizon: Duration
    /// Property keys kept as group-by dimensions beside each total row (e.g. `endpoint`), and
    /// ``QuantityBand`` dimensions (named `#band(...)`), whose value is derived from the quantity: every
    /// dimension the ledger stores. A metric listed in ``metricGroupBy`` is aggregated by its own
    /// list there instead; any other metric by all of these.
    public var groupBy: [String]
    /// Per metric, the group-by properties it is aggregated by (each one of ``groupBy``). Each
    /// dimension costs one more aggregate cell per event in each grain, so a metric that only
    /// needs `region` should not pay for `endpoint` too. Empty: every metric by every property.
    public var metricGroupBy: [String: [String]] = [:]
    /// The (metric, property) pairs whose distinct values are counted exactly per period.
    public var uniqueCounts: [UniqueCountKey]
    /// How many distinct hourly cells a store may hold in its aggregate buffer before it folds
    /// them into the aggregate tables (see `SQLiteLedgerStore`). Larger buffers merge more
    /// batches into each table update; 0 folds every batch at once.
    ///
    /// A fold writes every distinct cell it holds once per grain, and with group-by dimensions
    /// most of a busy ledger's cells are touched between two folds whatever their spacing: the
    /// fold's cost is nearly fixed, so its share per event falls with the buffer. At 100,000
    /// the fold was half of the writer's time with the example pricing's group-by (`tally-bench
    /// ingest --pricing deploy/pricing.example.yaml`: 10.4 µs of writer CPU per event, 6.4 µs at
    /// 1,000,000). Counted as the distinct cells a fold would write (SQLite: the log's mirror
    /// counts them; logged cells while it does not know the log); the log stays bounded by eight
    /// times this many logged cells and by a thousand batches, and a collector also folds on a
    /// schedule (`LedgerUpkeep`).
    public var aggregateBufferCells: Int

    public init(
        lateWindow: LateWindow = .standard, dedupeHorizon: Duration = .seconds(35 * 86_400), groupBy: [String] = [],
        uniqueCounts: [UniqueCountKey] = [], aggregateBufferCells: Int = 1_000_000
    ) {
        self.lateWindow = lateWindow
        self.dedupeHorizon = dedupeHorizon
        self.groupBy = groupBy
        self.uniqueCounts = uniqueCounts
        self.aggregateBufferCells = aggregateBufferCells
    }

    /// The group-by properties `metric` is aggregated by: its own list, else every property.
    public func groupBy(of metric: String) -> [String] { metricGroupBy[metric] ?? groupBy }

    /// The metrics whose cells keep their smallest quantity (``UsageAggregate/min``); nil: every
    /// metric. A collector with a pricing file keeps it only for `min` metrics: the minimum costs
    /// every fold a column, and no other metric reads it.
    public var minimumMetrics: Set<String>?

    /// The metrics whose events set a level held until the series' next event (`weighted_sum`
    /// in the pricing file; ``Levels``): the store keeps their events' keys and quantities and
    /// their cells the level changes. Empty by default: every other metric costs nothing more.
    public var levelMetrics: Set<String> = []

    /// Whether `metric`'s cells keep their minimum.
    public func keepsMinimum(_ metric: String) -> Bool { minimumMetrics?.contains(metric) ?? true }

    /// The unique-count properties of each metric.
    public var uniquePropertiesByMetric: [String: [String]] {
        var unique: [String: [String]] = [:]
        for key in uniqueCounts { unique[key.metric, default: []].append(key.property) }
        return unique
    }

    /// Throws unless distinct values of `metric`.`property` are counted (a read of one that is
    /// not would silently answer zero).
    public func requireUniqueCount(metric: String, property: String) throws(LedgerError) {
        guard uniqueCounts.contains(UniqueCountKey(metric: metric, property: property)) else {
            throw .invalidConfiguration("unique_count of \(metric).\(property) is not configured")
        }
    }

    /// Decides what `prepared` becomes, given which of its candidate keys the store holds
    /// already: ``LedgerRules`` with this configuration, from the `speculated` cells when given.
    public func plan(
        _ classification: BatchClassification, existing: [Bool], speculated: SpeculatedCells? = nil
    ) throws(LedgerError) -> LedgerPlan {
        try classification.plan(
            existing: existing, groupBy: groupBy(of:), uniqueCounts: uniquePropertiesByMetric, keepsMinimum: keepsMinimum(_:),
            levelMetrics: levelMetrics, speculated: speculated)
    }

    /// Makes `plan`, the plan for no key stored, the plan for `existing` by moving the stored
    /// events to the duplicates; false, `plan` untouched, when it cannot be made that way
    /// (``BatchClassification/adjust(_:existing:groupBy:uniqueCounts:keepsMinimum:speculated:)``).
    func adjust(
        _ plan: inout LedgerPlan, _ classification: BatchClassification, existing: [Bool], speculated: SpeculatedCells
    ) throws(LedgerError) -> Bool {
        try classification.adjust(
            &plan, existing: existing, groupBy: groupBy(of:), uniqueCounts: uniquePropertiesByMetric, keepsMinimum: keepsMinimum(_:),
            speculated: speculated)
    }

    /// The same plan, taken from `speculation` (made for this configuration) when there is one
    /// (``LedgerSpeculation/plan(existing:)``).
    func plan(
        _ classification: BatchClassification, existing: [Bool], speculation: LedgerSpeculation?
    ) throws(LedgerError) -> LedgerPlan {
        guard let speculation else { return try plan(classification, existing: existing) }
        return try speculation.plan(existing: existing)
    }

    /// Throws ``LedgerError/invalidConfiguration(_:)`` with the first problem found.
    public func validate() throws(LedgerError) {
        if dedupeHorizon < lateWindow.lateArrivalLimit {
            throw .invalidConfiguration(
                "the dedupe horizon (\(dedupeHorizon.microseconds / 1_000_000)s) is shorter than the late-arrival limit "
                    + "(\(lateWindow.lateArrivalLimit.microseconds / 1_000_000)s): a late retry could be billed twice")
        }
        if lateWindow.grace < .zero || lateWindow.lateArrivalLimit < .zero || lateWindow.maxFutureSkew < .zero {
            throw .invalidConfiguration("grace, late-arrival limit and future skew must not be negative")
        }
        if groupBy.contains("") { throw .invalidConfiguration("a group-by property key must not be empty") }
        if Set(groupBy).count != groupBy.count { throw .invalidConfiguration("group-by property keys repeat") }
        for dimension in groupBy where QuantityBand.isBand(dimension) && QuantityBand(dimension: dimension) == nil {
            throw .invalidConfiguration("'\(dimension)' starts with '#' but is not a quantity band (#band(multiplier,lower,upper))")
        }
        for (metric, properties) in metricGroupBy.sorted(by: { $0.key < $1.key }) {
            for property in properties where !groupBy.contains(property) {
                throw .invalidConfiguration("the group-by property '\(property)' of \(metric) is not one of the ledger's (\(groupBy))")
            }
            if Set(properties).count != properties.count { throw .invalidConfiguration("the group-by properties of \(metric) repeat") }
        }
        if aggregateBufferCells < 0 { throw .invalidConfiguration("the aggregate buffer size must not be negative") }
    }
}

/// A (metric, property) pair whose distinct property values are counted per tenant and period.
public struct UniqueCountKey: Sendable, Hashable {
    public var metric: String
    public var property: String
    public init(metric: String, property: String) {
        self.metric = metric
        self.property = property
    }
}

/// Why a ledger operation failed. Each case says what to do next in its message.
public enum LedgerError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The database refused an operation: its result code, its message, and what Tally was doing.
    case database(code: Int32, message: String, context: String)
    /// A sum would leave the exact 128-bit quantity range; the batch was not committed.
    case quantityOverflow(String)
    case invalidConfiguration(String)
    /// A stored row could not be read back (hand-edited or corrupt database).
    case corruptRow(String)
    /// The batch is older than the dedupe horizon and its record was pruned; it cannot be
    /// answered idempotently any more.
    case batchExpired(agent: String, sequence: UInt64)
    /// A recorded (agent, sequence) was sent again with different events.
    case sequenceReused(agent: String, sequence: UInt64)
    /// A correction that cannot be applied (its event is not billed, already voided, its key
    /// was used for another correction): nothing was written.
    case correctionRefused(String)
    /// A merging reader (``LedgerStore/mergeUnfoldedLogOnRead()``) was asked a read it cannot
    /// merge while the aggregate log has rows: the read needs a fold first, which only a writer
    /// does. Nothing was read; ask a writer (the collector's `Ledger` does so by itself).
    case readNeedsFold(String)

    /// Whether the store itself failed (the database refused a write, a row would not read),
    /// as opposed to a batch that cannot be committed whatever the store's state.
    public var isStoreFailure: Bool {
        switch self {
        case .database, .corruptRow: true
        case .quantityOverflow, .invalidConfiguration, .batchExpired, .sequenceReused, .correctionRefused, .readNeedsFold: false
        }
    }

    public var description: String {
        switch self {
        case .database(let code, let message, let context):
            "ledger database error \(code) while \(context): \(message)"
        case .quantityOverflow(let what):
            "quantity overflow: \(what) leaves the exact 128-bit range; the batch was not committed"
        case .invalidConfiguration(let problem): "invalid ledger configuration: \(problem)"
        case .corruptRow(let what): "corrupt ledger row: \(what)"
        case .batchExpired(let agent, let sequence):
            "batch \(sequence) of agent '\(agent)' is older than the dedupe horizon and its record was pruned"
        case .sequenceReused(let agent, let sequence):
            "agent '\(agent)' sent batch \(sequence) again with different events: a sequence number must never be reused"
        case .correctionRefused(let why): "correction refused: \(why)"
        case .readNeedsFold(let read): "\(read) needs the aggregate log folded first; only a ledger writer folds"
        }
    }
}

/// What ``LedgerStore/prune(now:)`` removed.
public struct PruneReport: Sendable, Hashable {
    /// Batch records older than the horizon that were deleted.
    public var batchRecordsDeleted: Int
    public init(batchRecordsDeleted: Int) { self.batchRecordsDeleted = batchRecordsDeleted }
}
