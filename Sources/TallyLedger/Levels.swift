public import TallyCore

/// Levels: the ledger's side of `weighted_sum` metrics (issue 15), such as seats or stored GB.
///
/// Each event of a level metric sets the level of its series — (tenant, metric) — from its
/// timestamp until the series' next event, ordered by (timestamp, fingerprint) like the raw
/// ledger. Before the first event the level is zero. The time integral of the level over
/// `[a, b)` is what a `weighted_sum` bills.
///
/// The aggregate cells keep it exactly and additively. With `d_k` the change event `k` makes
/// (its quantity minus the level just before it) at time `t_k`, the level at `t` is the sum of
/// the changes at or before `t`, and
///
///     ∫[a,b) level = L(a)·(b − a) + b·Σ d_k − Σ d_k·t_k        (over the changes in [a, b))
///
/// where `L(a)` is the sum of every change before `a`. So each hourly cell keeps `Σ d` and
/// `Σ d·t` (``UsageAggregate/levelDelta``, ``UsageAggregate/levelTime``), which roll up to days
/// and months by addition like every other column, and any range of whole hours is priced from
/// two reads: the cells before it and the cells in it (``LevelIntegral``).
///
/// Events arrive out of order. An event `k` placed between `p` (before it) and `n` (after it)
/// changes the level by `d_k = q_k − q_p` at `t_k`, and `n`'s change, `q_n − q_p` until then,
/// becomes `q_n − q_k`: `−d_k` more at `t_n`. Both go into cells under `k`'s own `billed_in`
/// (the period it is billed in, nil when on time), so that the cells of the events billed
/// through any period describe the level those events alone set, in every hour up to that
/// period's end: every event billed later arrived later, and its two changes are exactly the
/// difference its insertion made.
///
/// To place an event the store keeps each level event's key and quantity (`levels`) and reads
/// the neighbourhood of a batch's new events: the last row before the first of them, the rows
/// between them, and the first row after the last (``LevelSeries/neighbourhood``).
public enum Levels {
    /// A level row: one event of a level metric, by its raw key.
    public struct Row: Sendable, Hashable {
        public var key: RawKey
        public var quantity: Quantity

        public init(key: RawKey, quantity: Quantity) {
            self.key = key
            self.quantity = quantity
        }
    }

    /// A billed event of a level metric, new in this batch.
    public struct Event: Sendable, Hashable {
        public var series: Series
        public var row: Row
        public var billedIn: BillingPeriod?

        public init(series: Series, row: Row, billedIn: BillingPeriod?) {
            self.series = series
            self.row = row
            self.billedIn = billedIn
        }
    }

    /// A level series: one metric of one tenant.
    public struct Series: Sendable, Hashable, Comparable {
        public var tenant: String
        public var metric: String

        public init(tenant: String, metric: String) {
            self.tenant = tenant
            self.metric = metric
        }

        public static func < (a: Series, b: Series) -> Bool { (a.tenant, a.metric) < (b.tenant, b.metric) }
    }

    /// Adds the level changes of `events` (one series' new events, any order) to `cells`,
    /// given `neighbourhood`: the series' stored rows around them (sorted by key; see the type's
    /// documentation). Throws ``LedgerError/quantityOverflow(_:)`` when a change times its time
    /// leaves the 128-bit range.
    public static func addChanges(
        of events: [Event], neighbourhood: [Row], to cells: inout AggregateCells
    ) throws(LedgerError) {
        var rows = neighbourhood
        for event in events.sorted(by: { $0.row.key < $1.row.key }) {
            let position = insertionPoint(of: event.row.key, in: rows)
            let before = position > 0 ? rows[position - 1].quantity : .zero
            let change: Quantity
            do { change = try event.row.quantity.subtracting(before) } catch {
                throw .quantityOverflow("the level change \(event.row.quantity) − \(before)")
            }
            rows.insert(event.row, at: position)
            guard change != .zero else { continue }
            try add(change, at: event.row.key.timestamp, of: event, to: &cells)
            if position + 1 < rows.count {
                try add(Quantity(nanos: 0 - change.nanos), at: rows[position + 1].key.timestamp, of: event, to: &cells)
            }
        }
    }

    /// The index of the first row whose key is greater than `key`.
    static func insertionPoint(of key: RawKey, in rows: [Row]) -> Int {
        var low = 0
        var high = rows.count
        while low < high {
            let middle = (low + high) / 2
            if rows[middle].key < key { low = middle + 1 } else { high = middle }
        }
        return low
    }

    private static func add(_ change: Quantity, at time: EventTime, of event: Event, to cells: inout AggregateCells) throws(LedgerError) {
        let key = AggregateCellKey(
            tenant: event.series.tenant, metric: event.series.metric, hour: time.hourSinceEpoch, billedIn: event.billedIn)
        try cells.add(try levelChange(change, at: time), at: key)
    }

    /// The aggregate of one level change `change` at `time`.
    public static func levelChange(_ change: Quantity, at time: EventTime) throws(LedgerError) -> UsageAggregate {
        let (weighted, overflow) = change.nanos.multipliedReportingOverflow(by: Int128(time.microseconds))
        if overflow { throw .quantityOverflow("the level change \(change) at \(time)") }
        return .levelChange(delta: change, time: Quantity(nanos: weighted))
    }

    /// The level changes the stored events of one series in a range make, as their final order
    /// has them (each event's quantity minus the one before it; the first one's predecessor is
    /// `before`, the last stored row before the range): per hour, whatever period each change
    /// was billed in. What ``addChanges(of:neighbourhood:to:)`` adds up to once every event is in,
    /// for the audit.
    public static func finalChanges(
        of rows: [Row], after before: Row?, into changes: inout [AggregateCellKey: UsageAggregate], series: Series
    ) throws(LedgerError) {
        var level = before?.quantity ?? .zero
        for row in rows.sorted(by: { $0.key < $1.key }) {
            let change: Quantity
            do { change = try row.quantity.subtracting(level) } catch { throw .quantityOverflow("the level change \(row.quantity) − \(level)") }
            level = row.quantity
            guard change != .zero else { continue }
            let key = AggregateCellKey(tenant: series.tenant, metric: series.metric, hour: row.key.timestamp.hourSinceEpoch)
            try changes.merge(try levelChange(change, at: row.key.timestamp), at: key)
        }
    }
}

/// The time integral of a level over whole hours, from aggregates (``Levels``).
public enum LevelIntegral {
    /// `∫[from, to) level dt` in (nano-units × microseconds): `before` merges every cell before
    /// `from`, `within` every cell of `from ..< to`.
    public static func integral(
        before: UsageAggregate?, within: UsageAggregate?, from: EventTime, to: EventTime
    ) throws(LedgerError) -> Int128 {
        let start = before?.levelDelta.nanos ?? 0
        let span = Int128(to.microseconds) - Int128(from.microseconds)
        var total: Int128
        var overflow: Bool
        (total, overflow) = start.multipliedReportingOverflow(by: span)
        if !overflow, let within {
            let (late, lateOverflow) = within.levelDelta.nanos.multipliedReportingOverflow(by: Int128(to.microseconds))
            overflow = lateOverflow
            if !overflow { (total, overflow) = total.addingReportingOverflow(late) }
            if !overflow { (total, overflow) = total.subtractingReportingOverflow(within.levelTime.nanos) }
        }
        if overflow { throw .quantityOverflow("the level integral from \(from) to \(to)") }
        return total
    }

    /// `value / divisor` rounded to the nearest integer, ties to even (`divisor` > 0).
    public static func dividedRoundingHalfEven(_ value: Int128, by divisor: Int128) -> Int128 {
        precondition(divisor > 0, "a positive divisor")
        var quotient = value / divisor
        var remainder = value % divisor
        if remainder < 0 {
            quotient -= 1
            remainder += divisor
        }
        // Now value = quotient·divisor + remainder with 0 <= remainder < divisor.
        let twice = remainder * 2
        if twice > divisor || (twice == divisor && quotient % 2 != 0) { quotient += 1 }
        return quotient
    }
}
