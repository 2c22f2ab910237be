public import TallyCore

/// Exact aggregates of a set of events: sum, count, max, min, and the latest value (greatest
/// timestamp, ties broken by the greater fingerprint). Combining is associative and commutative,
/// so the order events arrive in never changes the result. The average is derived
/// (``average``), never stored.
public struct UsageAggregate: Sendable, Hashable {
    public var sum: Quantity
    public var count: Int64
    public var max: Quantity
    /// The smallest quantity; nil when it was not recorded: cells written before Tally kept
    /// minimums (SQLite schema 3, PostgreSQL migration 4 and earlier) have none, and a merge with
    /// such a cell has none either, so a minimum is never answered from part of the events.
    public var min: Quantity?
    public var latest: LatestValue
    /// For a `weighted_sum` metric (``LedgerConfiguration/levelMetrics``), the level changes in
    /// the cell: the sum of each change `d` (an event's quantity minus the level before it), and
    /// `levelTime`, the sum of `d` times the change's time in microseconds since the epoch, kept
    /// as a ``Quantity`` whose nano-units are `d`'s nano-units times those microseconds. Both add
    /// up across cells and grains like `sum`; ``LevelIntegral`` turns them into the time integral
    /// of the level. Zero for every other metric.
    public var levelDelta: Quantity = .zero
    public var levelTime: Quantity = .zero

    public init(sum: Quantity, count: Int64, max: Quantity, min: Quantity?, latest: LatestValue) {
        self.sum = sum
        self.count = count
        self.max = max
        self.min = min
        self.latest = latest
    }

    /// A cell holding only level changes: no event of its own (count 0). Its other fields are
    /// what a merge leaves unchanged — zero sum and maximum (quantities are never negative), the
    /// earliest possible latest value — except the minimum, which is not recorded (a merge then
    /// records none for the cell; no `weighted_sum` metric reads its minimum).
    public static func levelChange(delta: Quantity, time: Quantity) -> UsageAggregate {
        var aggregate = UsageAggregate(
            sum: .zero, count: 0, max: .zero, min: nil,
            latest: LatestValue(timestamp: EventTime(microseconds: .min), fingerprint: Fingerprint(high: 0, low: 0), quantity: .zero))
        aggregate.levelDelta = delta
        aggregate.levelTime = time
        return aggregate
    }

    /// The aggregate of one event.
    public init(quantity: Quantity, timestamp: EventTime, fingerprint: Fingerprint) {
        self.init(
            sum: quantity, count: 1, max: quantity, min: quantity,
            latest: LatestValue(timestamp: timestamp, fingerprint: fingerprint, quantity: quantity))
    }

    /// The mean quantity, `sum / count`, to ``Quantity``'s 9 decimal places, rounded half-even
    /// (see ``Quantity/dividedRoundingHalfEven(by:)``); zero for no events.
    public var average: Quantity { sum.dividedRoundingHalfEven(by: count) }

    /// Folds `other` in; throws ``LedgerError/quantityOverflow(_:)`` instead of wrapping.
    public mutating func merge(_ other: UsageAggregate) throws(LedgerError) {
        do {
            sum = try sum.adding(other.sum)
        } catch {
            throw .quantityOverflow("sum \(sum) + \(other.sum)")
        }
        let (total, overflow) = count.addingReportingOverflow(other.count)
        if overflow { throw .quantityOverflow("count \(count) + \(other.count)") }
        count = total
        if other.max > max { max = other.max }
        if let mine = min, let theirs = other.min { min = Swift.min(mine, theirs) } else { min = nil }
        if other.latest > latest { latest = other.latest }
        guard other.levelDelta != .zero || other.levelTime != .zero else { return }
        do {
            levelDelta = try levelDelta.adding(other.levelDelta)
            levelTime = try levelTime.adding(other.levelTime)
        } catch {
            throw .quantityOverflow("level changes \(levelDelta), \(levelTime) + \(other.levelDelta), \(other.levelTime)")
        }
    }

    /// Folds a list of aggregates; nil for an empty list.
    public static func merging(_ parts: some Sequence<UsageAggregate>) throws(LedgerError) -> UsageAggregate? {
        var result: UsageAggregate?
        for part in parts {
            if result == nil { result = part } else { try result?.merge(part) }
        }
        return result
    }
}

/// The value of the latest event: ordered by (timestamp, fingerprint).
public struct LatestValue: Sendable, Hashable, Comparable {
    public var timestamp: EventTime
    public var fingerprint: Fingerprint
    public var quantity: Quantity

    public init(timestamp: EventTime, fingerprint: Fingerprint, quantity: Quantity) {
        self.timestamp = timestamp
        self.fingerprint = fingerprint
        self.quantity = quantity
    }

    public static func < (lhs: LatestValue, rhs: LatestValue) -> Bool {
        (lhs.timestamp, lhs.fingerprint) < (rhs.timestamp, rhs.fingerprint)
    }
}

/// The key of one hourly aggregate cell: tenant, metric, hour, an optional group-by dimension,
/// and the period an adjustment is billed in (nil for usage billed in its own period).
/// The total row of an hour has `dimension == ""` and `value == ""`; an event without the
/// dimension's property counts under `value == ""`, so each dimension's groups add up to the total.
///
/// The key hashes its fields once, when it is made or changed, and a dictionary hashes that
/// number: a cell's key goes through several dictionaries on its way (the batch's speculated
/// cells and their contributors on a preparation thread, the log mirror or memory and the fold
/// on the writer), and each hashed its five strings again (in two alternating 2M-event drains,
/// the collector's writer thread used 4.58 / 5.33 µs per event with the hash made once against
/// 5.12 / 6.01). The number is the process's seeded `Hasher` over the fields, so an
/// attacker who does not know the seed cannot make keys collide any more than before; equal
/// keys have equal numbers, and `==` compares the numbers first.
public struct AggregateCellKey: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var tenant: String { didSet { rehash() } }
    public var metric: String { didSet { rehash() } }
    /// Hours since the Unix epoch (UTC).
    public var hour: Int64 { didSet { rehash() } }
    public var dimension: String { didSet { rehash() } }
    public var value: String { didSet { rehash() } }
    public var billedIn: BillingPeriod? { didSet { rehash() } }
    /// The fields' hash, with this process's seed.
    private var hashed = 0

    public init(tenant: String, metric: String, hour: Int64, dimension: String = "", value: String = "", billedIn: BillingPeriod? = nil) {
        self.tenant = tenant
        self.metric = metric
        self.hour = hour
        self.dimension = dimension
        self.value = value
        self.billedIn = billedIn
        rehash()
    }

    private mutating func rehash() {
        var hasher = Hasher()
        hasher.combine(tenant)
        hasher.combine(metric)
        hasher.combine(hour)
        hasher.combine(dimension)
        hasher.combine(value)
        hasher.combine(billedIn)
        hashed = hasher.finalize()
    }

    public func hash(into hasher: inout Hasher) { hasher.combine(hashed) }

    public static func == (lhs: AggregateCellKey, rhs: AggregateCellKey) -> Bool {
        lhs.hashed == rhs.hashed && lhs.hour == rhs.hour && lhs.tenant == rhs.tenant && lhs.metric == rhs.metric
            && lhs.dimension == rhs.dimension && lhs.value == rhs.value && lhs.billedIn == rhs.billedIn
    }

    public var hourStart: EventTime { EventTime(startOfHour: hour) }

    public static func < (lhs: AggregateCellKey, rhs: AggregateCellKey) -> Bool {
        (lhs.tenant, lhs.metric, lhs.hour, lhs.dimension, lhs.value, lhs.billedIn?.description ?? "")
            < (rhs.tenant, rhs.metric, rhs.hour, rhs.dimension, rhs.value, rhs.billedIn?.description ?? "")
    }

    public var description: String {
        var text = "\(tenant)/\(metric)@\(hourStart)"
        if !dimension.isEmpty { text += " \(dimension)=\(value)" }
        if let billedIn { text += " billed in \(billedIn)" }
        return text
    }
}

/// The width of an aggregate table's buckets. The ledger keeps every cell three times: hourly
/// (the unit of audit), and rolled up by UTC day and by calendar month, so that a month-to-date
/// question reads one row per group instead of ~720.
public enum AggregateGrain: String, Sendable, Hashable, CaseIterable, Comparable {
    case hour, day, month

    /// The first hour of the bucket of this grain that contains `hour`.
    public func bucket(of hour: Int64) -> Int64 {
        switch self {
        case .hour: return hour
        case .day: return AggregateGrain.floorDivide(hour, 24) * 24
        case .month:
            return BillingPeriod(containingHour: hour).start.hourSinceEpoch
        }
    }

    static func floorDivide(_ value: Int64, _ divisor: Int64) -> Int64 {
        let quotient = value / divisor
        return value % divisor < 0 ? quotient - 1 : quotient
    }

    public static func < (lhs: AggregateGrain, rhs: AggregateGrain) -> Bool {
        allCases.firstIndex(of: lhs) ?? 0 < allCases.firstIndex(of: rhs) ?? 0
    }

    /// Splits the hours `hours` into ranges, each answered exactly by one grain no coarser than
    /// `coarsest`: whole months from the monthly rollup, whole days from the daily one, the
    /// remaining hours from the hourly table. At most five ranges; ranges of a grain are bucket
    /// starts (a daily range `a..<b` means the days whose first hour lies in it).
    public static func plan(_ hours: Range<Int64>, coarsest: AggregateGrain) -> [(grain: AggregateGrain, hours: Range<Int64>)] {
        guard !hours.isEmpty else { return [] }
        var pieces: [(grain: AggregateGrain, hours: Range<Int64>)] = []
        func days(_ range: Range<Int64>) {
            guard !range.isEmpty else { return }
            let first = floorDivide(range.lowerBound + 23, 24) * 24
            let last = floorDivide(range.upperBound, 24) * 24
            guard coarsest >= .day, first < last else {
                pieces.append((.hour, range))
                return
            }
            if range.lowerBound < first { pieces.append((.hour, range.lowerBound..<first)) }
            pieces.append((.day, first..<last))
            if last < range.upperBound { pieces.append((.hour, last..<range.upperBound)) }
        }
        guard coarsest == .month else {
            days(hours)
            return pieces
        }
        var month = BillingPeriod(containingHour: hours.lowerBound)
        if month.start.hourSinceEpoch < hours.lowerBound { month = month.next }
        let firstMonth = month.start.hourSinceEpoch
        // The last month boundary at or before the range's end (a weighted sum reads the cells
        // before a period from the earliest accepted hour: thousands of years of months).
        let end = Swift.min(hours.upperBound, EventTime.acceptedRange.upperBound.hourSinceEpoch + 1)
        let lastMonth = BillingPeriod(containingHour: end).start.hourSinceEpoch
        guard firstMonth < lastMonth else {
            days(hours)
            return pieces
        }
        days(hours.lowerBound..<firstMonth)
        pieces.append((.month, firstMonth..<lastMonth))
        days(lastMonth..<hours.upperBound)
        return pieces
    }
}

extension AggregateCellKey {

    /// The key of the `grain` bucket this hourly cell rolls up into (`hour` becomes the bucket's
    /// first hour).
    public func rolledUp(to grain: AggregateGrain) -> AggregateCellKey {
        var key = self
        key.hour = grain.bucket(of: hour)
        return key
    }
}

/// Aggregate cells combined in memory, so that a batch writes one update per distinct cell.
public struct AggregateCells: Sendable {
    public private(set) var cells: [AggregateCellKey: UsageAggregate] = [:]

    public init() {}

    /// Empty, with room for `capacity` cells without rehashing.
    public init(minimumCapacity capacity: Int) { cells.reserveCapacity(capacity) }

    /// The sum of the total cells (no dimension): every event's quantity once. No cell of these
    /// events, at any grain, can sum to more.
    public func totalSum() throws(LedgerError) -> Quantity {
        var total = Quantity.zero
        for (key, aggregate) in cells where key.dimension.isEmpty {
            do { total = try total.adding(aggregate.sum) } catch { throw .quantityOverflow("the sum of a batch's quantities") }
        }
        return total
    }

    /// Adds an event to its total cell and to one cell per group-by dimension: the value of the
    /// property of that name, or for a ``QuantityBand`` dimension the band of its quantity.
    public mutating func add(
        _ event: UsageEvent, fingerprint: Fingerprint, billedIn: BillingPeriod?, groupBy: [String], keepsMinimum: Bool = true
    ) throws(LedgerError) {
        let one = Self.aggregate(of: event, fingerprint: fingerprint, keepsMinimum: keepsMinimum)
        try Self.forEachKey(of: event, billedIn: billedIn, groupBy: groupBy) { (key) throws(LedgerError) in try add(one, at: key) }
    }

    /// What one event adds to each of its cells.
    static func aggregate(of event: UsageEvent, fingerprint: Fingerprint, keepsMinimum: Bool) -> UsageAggregate {
        var one = UsageAggregate(quantity: event.quantity, timestamp: event.timestamp, fingerprint: fingerprint)
        if !keepsMinimum { one.min = nil }
        return one
    }

    /// The keys of the cells an event adds to: its total cell, then one per group-by dimension.
    static func forEachKey(
        of event: UsageEvent, billedIn: BillingPeriod?, groupBy: [String], _ body: (AggregateCellKey) throws(LedgerError) -> Void
    ) throws(LedgerError) {
        let hour = event.timestamp.hourSinceEpoch
        try body(AggregateCellKey(tenant: event.tenant, metric: event.metric, hour: hour, billedIn: billedIn))
        for dimension in groupBy {
            let value: String
            if QuantityBand.isBand(dimension) {
                guard let band = QuantityBand(dimension: dimension) else {
                    throw .invalidConfiguration("'\(dimension)' is not a quantity band dimension")
                }
                value = band.value(of: event.quantity)
            } else {
                value = event.properties[dimension] ?? ""
            }
            // Made whole rather than changed field by field: each change of a key hashes all its
            // fields again, and this runs for every cell of every event.
            try body(AggregateCellKey(tenant: event.tenant, metric: event.metric, hour: hour, dimension: dimension, value: value, billedIn: billedIn))
        }
    }

    /// Replaces the cell at `key` (removes it for nil).
    mutating func set(_ aggregate: UsageAggregate?, at key: AggregateCellKey) { cells[key] = aggregate }

    mutating func add(_ aggregate: UsageAggregate, at key: AggregateCellKey) throws(LedgerError) {
        try cells.merge(aggregate, at: key)
    }

    /// Folds every cell of `other` in.
    public mutating func merge(_ other: AggregateCells) throws(LedgerError) {
        for (step, (key, aggregate)) in other.cells.enumerated() {
            // The collector's preparation threads merge committed batches (thousands of cells
            // each) into the log's mirror between two batches: a read waiting for the core runs
            // in between.
            YieldPoint.after(step: step, every: 256)
            try add(aggregate, at: key)
        }
    }

    /// The most cells a rollup makes room for before it has them (``rolledUp(to:)``).
    static let rollupPresize = 1 << 16

    /// These (hourly) cells rolled up to `grain`.
    public func rolledUp(to grain: AggregateGrain) throws(LedgerError) -> AggregateCells {
        guard grain != .hour else { return self }
        // Room for every cell of a batch: a batch mostly spans a few hours of one day, so its
        // rollup has nearly as many cells as the hours it comes from, and growing costs
        // rehashing. Not for a fold's hundreds of thousands of cells: they span many hours, so
        // their rollup has far fewer, and room for them all was room the writer thread paid
        // for, page by page, as the kernel zeroed the pages the scattered cells touched (half
        // of a fold's rollups in `perf`); past the cap the result grows as it needs.
        var result = AggregateCells(minimumCapacity: Swift.min(cells.count, Self.rollupPresize))
        for (step, (key, aggregate)) in cells.enumerated() {
            // A fold rolls up tens of thousands of cells on the writer thread.
            YieldPoint.after(step: step, every: 256)
            try result.add(aggregate, at: key.rolledUp(to: grain))
        }
        return result
    }

    public var isEmpty: Bool { cells.isEmpty }
    public var count: Int { cells.count }

    /// Empties these cells, keeping their storage for the next ones.
    mutating func removeAll() { cells.removeAll(keepingCapacity: true) }
}

/// The result of recomputing aggregates from the raw ledger: every cell where the stored value
/// differs from the recomputed one.
public struct AggregateDrift: Sendable, Hashable {
    /// One cell where the stored aggregate and the recount disagree; nil means "no such cell".
    public struct Difference: Sendable, Hashable {
        /// The table the cell is in; for a day or month cell, `key.hour` is the bucket's first hour.
        public var grain: AggregateGrain = .hour
        public var key: AggregateCellKey
        public var recomputed: UsageAggregate?
        public var stored: UsageAggregate?
    }

    /// The tenant audited; nil when every tenant was.
    public var tenant: String?
    public var period: BillingPeriod
    public var cellsCompared: Int
    public var differences: [Difference]
}

extension Dictionary where Value == UsageAggregate {
    /// Merges `aggregate` into the entry at `key` (or makes it the entry).
    /// The key is hashed once, present or not, and the entry merged in place: this runs for every
    /// cell of every event (on the preparation threads, the writer and in folds), and most of a
    /// batch's cells are new to it (with a group-by, a batch has about 1.5 cells per event).
    mutating func merge(_ aggregate: UsageAggregate, at key: Key) throws(LedgerError) {
        // The default is evaluated (only for an absent key) before the entry is handed over.
        var added = false
        func mergeIn(_ entry: inout UsageAggregate) throws(LedgerError) { if !added { try entry.merge(aggregate) } }
        try mergeIn(
            &self[
                key,
                default: {
                    added = true
                    return aggregate
                }()])
    }
}
