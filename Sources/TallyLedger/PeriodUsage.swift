public import TallyCore

/// A kind of aggregate cell: a metric's totals (dimension "") or its cells by one group-by property.
public struct MetricDimension: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var metric: String
    public var dimension: String

    public init(metric: String, dimension: String = "") {
        self.metric = metric
        self.dimension = dimension
    }

    public static func < (lhs: MetricDimension, rhs: MetricDimension) -> Bool {
        (lhs.metric, lhs.dimension) < (rhs.metric, rhs.dimension)
    }

    public var description: String { dimension.isEmpty ? metric : "\(metric) by \(dimension)" }
}

/// Every tenant's usage in one period, for the admin overview: a few statements whatever the
/// number of tenants (``LedgerStore/periodUsage(_:)``), never one per tenant.
public struct PeriodUsageQuery: Sendable, Hashable {
    public var period: BillingPeriod
    /// The kinds of monthly cells to read, for every tenant.
    public var cells: [MetricDimension]
    /// Configured unique-count pairs whose distinct values (billed in the period itself) to count.
    public var uniqueCounts: [UniqueCountKey]
    /// Only tenants whose name contains this text (``matches(tenant:)``); nil or empty: every tenant.
    public var search: String?

    public init(period: BillingPeriod, cells: [MetricDimension], uniqueCounts: [UniqueCountKey] = [], search: String? = nil) {
        self.period = period
        self.cells = cells
        self.uniqueCounts = uniqueCounts
        self.search = search
    }

    /// The search as both backends compare it: ASCII letters folded to lower case, everything
    /// else exactly as typed; nil when there is nothing to search for.
    public var foldedSearch: String? {
        guard let search, !search.isEmpty else { return nil }
        return Self.foldASCII(search)
    }

    /// Whether `tenant` is one the search selects: its name contains the search text, with ASCII
    /// letters compared case-insensitively (`ACME` finds `acme-1`) and every other character
    /// exactly (`É` does not find `é`), the same on every backend. `%` and `_` are plain text.
    public func matches(tenant: String) -> Bool {
        guard let folded = foldedSearch else { return true }
        return Self.contains(Array(tenant.utf8), folded: Array(folded.utf8))
    }

    /// `text` with `A`–`Z` lowered, byte for byte; no other character changes.
    public static func foldASCII(_ text: String) -> String {
        String(decoding: text.utf8.map(foldedASCII(byte:)), as: UTF8.self)
    }

    static func foldedASCII(byte: UInt8) -> UInt8 { byte >= 0x41 && byte <= 0x5A ? byte + 0x20 : byte }

    /// Whether the UTF-8 bytes of `name`, ASCII-folded, contain the bytes `folded` (an already
    /// folded search): a substring of bytes, which for valid UTF-8 is a substring of code points,
    /// as PostgreSQL's `strpos` compares. The SQLite store's `tally_contains` calls this.
    static func contains(_ name: some Collection<UInt8>, folded needle: [UInt8]) -> Bool {
        guard !needle.isEmpty else { return true }
        let haystack = name.map(foldedASCII(byte:))
        guard haystack.count >= needle.count else { return false }
        for start in 0...(haystack.count - needle.count) where haystack[start] == needle[0] {
            if haystack[start..<(start + needle.count)].elementsEqual(needle) { return true }
        }
        return false
    }
}

/// One monthly cell of a tenant's period: usage with event time in the period, billed in it
/// (`billedIn` nil) or, for late events of a closed period, in the later period it names.
public struct PeriodUsageCell: Sendable, Hashable, Comparable {
    public var metric: String
    public var dimension: String
    public var value: String
    public var billedIn: BillingPeriod?
    public var aggregate: UsageAggregate

    public init(metric: String, dimension: String, value: String, billedIn: BillingPeriod?, aggregate: UsageAggregate) {
        self.metric = metric
        self.dimension = dimension
        self.value = value
        self.billedIn = billedIn
        self.aggregate = aggregate
    }

    public static func < (lhs: PeriodUsageCell, rhs: PeriodUsageCell) -> Bool {
        (lhs.metric, lhs.dimension, lhs.value, lhs.billedIn?.description ?? "")
            < (rhs.metric, rhs.dimension, rhs.value, rhs.billedIn?.description ?? "")
    }
}

/// One tenant's usage in a period as ``LedgerStore/periodUsage(_:)`` reads it: the monthly cells
/// of the query's kinds, the own-period distinct values of its unique-count pairs, and whether
/// late usage of earlier periods is billed in this period. It answers the billing reads of its
/// own period (``BillableUsageSource``), so a tenant on one plan all month with nothing adjusted
/// is priced without another statement.
public struct TenantPeriodUsage: Sendable, Hashable {
    public var tenant: String
    public var period: BillingPeriod
    /// In (metric, dimension, value, billed in) order.
    public var cells: [PeriodUsageCell]
    public var distinctValues: [UniqueCountKey: Int]
    /// Late usage of an earlier, closed period is billed in this period (adjustment lines).
    public var hasAdjustments: Bool
    /// The kinds of cells and the unique-count pairs that were read: anything else is not known
    /// here (an empty list would look like zero usage), and asking for it is an error.
    public var read: Set<MetricDimension>
    public var readUniqueCounts: Set<UniqueCountKey>

    public init(
        tenant: String, period: BillingPeriod, cells: [PeriodUsageCell] = [], distinctValues: [UniqueCountKey: Int] = [:],
        hasAdjustments: Bool = false, read: Set<MetricDimension>, readUniqueCounts: Set<UniqueCountKey> = []
    ) {
        self.tenant = tenant
        self.period = period
        self.cells = cells
        self.distinctValues = distinctValues
        self.hasAdjustments = hasAdjustments
        self.read = read
        self.readUniqueCounts = readUniqueCounts
    }

    /// The metric's totals by event time, whatever period they are billed in; nil when none.
    public func total(of metric: String) throws(LedgerError) -> UsageAggregate? {
        var total: UsageAggregate?
        for cell in cells where cell.metric == metric && cell.dimension.isEmpty {
            if total == nil { total = cell.aggregate } else { try total?.merge(cell.aggregate) }
        }
        return total
    }
}

/// The aggregate reads a tenant's invoice is priced from. Every ``LedgerStore`` answers them;
/// a ``TenantPeriodUsage`` answers them for its own period's whole hours.
public protocol BillableUsageSource {
    /// Cells of one tenant and metric whose hour lies in `hours`, for one dimension ("" for the
    /// totals), merged per dimension value, restricted by `billing`.
    func billableAggregates(
        tenant: String, metric: String, hours: Range<Int64>, dimension: String, billing: BillingSelection
    ) throws(LedgerError) -> [String: UsageAggregate]

    /// Earlier periods that have late usage billed (as adjustments) in `period`, in order.
    func adjustedPeriods(tenant: String, billedIn period: BillingPeriod) throws(LedgerError) -> [BillingPeriod]

    /// Distinct values of a configured unique-count pair whose own period is `period`, billed
    /// in it or as adjustments up to `billedThrough`.
    func distinctValues(
        tenant: String, metric: String, property: String, period: BillingPeriod, billedThrough: BillingPeriod
    ) throws(LedgerError) -> Int
}

extension TenantPeriodUsage: BillableUsageSource {
    public func billableAggregates(
        tenant: String, metric: String, hours: Range<Int64>, dimension: String, billing: BillingSelection
    ) throws(LedgerError) -> [String: UsageAggregate] {
        try requireOwn(tenant)
        guard hours == period.start.hourSinceEpoch..<period.end.hourSinceEpoch else {
            throw .invalidConfiguration("a period read of \(period) answers its whole hours only, not \(hours)")
        }
        guard read.contains(MetricDimension(metric: metric, dimension: dimension)) else {
            throw .invalidConfiguration("the period read of \(period) did not read \(MetricDimension(metric: metric, dimension: dimension))")
        }
        var result: [String: UsageAggregate] = [:]
        for cell in cells where cell.metric == metric && cell.dimension == dimension && billing.includes(cell.billedIn) {
            try result.merge(cell.aggregate, at: cell.value)
        }
        return result
    }

    public func adjustedPeriods(tenant: String, billedIn period: BillingPeriod) throws(LedgerError) -> [BillingPeriod] {
        try requireOwn(tenant)
        guard period == self.period, !hasAdjustments else {
            throw .invalidConfiguration("the period read of \(self.period) does not know which periods are adjusted in \(period)")
        }
        return []
    }

    public func distinctValues(
        tenant: String, metric: String, property: String, period: BillingPeriod, billedThrough: BillingPeriod
    ) throws(LedgerError) -> Int {
        try requireOwn(tenant)
        let key = UniqueCountKey(metric: metric, property: property)
        // Values are billed in their own period or later, so "through the period itself" is "in it".
        guard period == self.period, billedThrough == period, readUniqueCounts.contains(key) else {
            throw .invalidConfiguration(
                "the period read of \(self.period) did not count \(metric)/\(property) for \(period) through \(billedThrough)")
        }
        return distinctValues[key] ?? 0
    }

    private func requireOwn(_ asked: String) throws(LedgerError) {
        guard asked == tenant else { throw .invalidConfiguration("the period read of tenant '\(tenant)' was asked about '\(asked)'") }
    }
}

/// What the ledger knows of one agent from its batch records: the last batch it had acked, and
/// the events of the batches still recorded (records are kept for the dedupe horizon; older
/// ones leave only the highest sequence pruned).
public struct AgentActivity: Sendable, Hashable {
    public var agent: String
    /// The highest batch sequence recorded or pruned.
    public var lastSequence: UInt64
    /// When the collector received (and committed) the agent's last recorded batch; nil when
    /// every record of the agent has been pruned.
    public var lastBatchAt: EventTime?
    /// Batch records kept (batches acked within the dedupe horizon).
    public var batches: Int64
    /// The outcome of every event of those batches (`received` is their sum).
    public var events: ReconciliationCounts

    public init(agent: String, lastSequence: UInt64, lastBatchAt: EventTime?, batches: Int64, events: ReconciliationCounts) {
        self.agent = agent
        self.lastSequence = lastSequence
        self.lastBatchAt = lastBatchAt
        self.batches = batches
        self.events = events
    }
}

/// Builds ``LedgerStore/periodUsage(_:)``'s answer from the rows a backend reads, so both
/// backends (and a reader's unfolded log) assemble it the same way.
struct PeriodUsageAssembly {
    let query: PeriodUsageQuery
    private var tenants: [String: TenantCells] = [:]

    private struct TenantCells {
        var cells: [PeriodUsageCellKey: UsageAggregate] = [:]
        var distinctValues: [UniqueCountKey: Int] = [:]
        var hasAdjustments = false
    }

    private struct PeriodUsageCellKey: Hashable {
        var kind: MetricDimension
        var value: String
        var billedIn: BillingPeriod?
    }

    init(_ query: PeriodUsageQuery) { self.query = query }

    /// A tenant the period has (a reconciliation row), with or without cells.
    mutating func addTenant(_ tenant: String) {
        if tenants[tenant] == nil { tenants[tenant] = TenantCells() }
    }

    /// A tenant with late usage of an earlier period billed in this one.
    mutating func addAdjusted(_ tenant: String) {
        tenants[tenant, default: TenantCells()].hasAdjustments = true
    }

    /// A monthly cell (or an hourly one of the period: cells merge into the month).
    mutating func add(
        tenant: String, kind: MetricDimension, value: String, billedIn: BillingPeriod?, _ aggregate: UsageAggregate
    ) throws(LedgerError) {
        let key = PeriodUsageCellKey(kind: kind, value: value, billedIn: billedIn)
        try tenants[tenant, default: TenantCells()].cells.merge(aggregate, at: key)
    }

    mutating func addDistinctValues(tenant: String, key: UniqueCountKey, count: Int) {
        tenants[tenant, default: TenantCells()].distinctValues[key, default: 0] += count
    }

    /// Merges a reader's unfolded hourly cells: those of the period's hours and the query's
    /// kinds, and the tenants with adjustments billed in the period.
    mutating func add(unfolded: UnfoldedCells?) throws(LedgerError) {
        guard let unfolded else { return }
        let query = self.query
        let kinds = Set(query.cells)
        var adjusted: [String] = []
        var found: [(AggregateCellKey, UsageAggregate)] = []
        try unfolded.forEach { key in
            query.matches(tenant: key.tenant)
        } _: { (key, aggregate) throws(LedgerError) in
            if key.billedIn == query.period && key.dimension.isEmpty { adjusted.append(key.tenant) }
            if BillingPeriod(containingHour: key.hour) == query.period
                && kinds.contains(MetricDimension(metric: key.metric, dimension: key.dimension))
            {
                found.append((key, aggregate))
            }
        }
        for tenant in adjusted { addAdjusted(tenant) }
        for (key, aggregate) in found {
            try add(
                tenant: key.tenant, kind: MetricDimension(metric: key.metric, dimension: key.dimension), value: key.value,
                billedIn: key.billedIn, aggregate)
        }
    }

    /// Every tenant, in byte order, with its cells in order.
    func answer() -> [TenantPeriodUsage] {
        let read = Set(query.cells)
        let counted = Set(query.uniqueCounts)
        return tenants.sorted { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }.map { tenant, found in
            let cells = found.cells.map {
                PeriodUsageCell(
                    metric: $0.key.kind.metric, dimension: $0.key.kind.dimension, value: $0.key.value, billedIn: $0.key.billedIn, aggregate: $0.value)
            }
            return TenantPeriodUsage(
                tenant: tenant, period: query.period, cells: cells.sorted(), distinctValues: found.distinctValues,
                hasAdjustments: found.hasAdjustments, read: read, readUniqueCounts: counted)
        }
    }
}
