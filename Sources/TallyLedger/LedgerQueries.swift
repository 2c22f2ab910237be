public import TallyCore

/// A usage question answered from hourly aggregates, never from raw events.
public struct UsageQuery: Sendable, Hashable {
    /// The width of each answered bucket (UTC calendar days and months).
    public enum Granularity: String, Sendable, Hashable, CaseIterable {
        case hour, day, month
    }

    public var tenant: String
    public var metric: String
    /// Hours whose start lies in `from ..< to` are included.
    public var from: EventTime
    public var to: EventTime
    public var granularity: Granularity
    /// A configured group-by property; nil for totals only.
    public var groupBy: String?

    public init(tenant: String, metric: String, from: EventTime, to: EventTime, granularity: Granularity, groupBy: String? = nil) {
        self.tenant = tenant
        self.metric = metric
        self.from = from
        self.to = to
        self.granularity = granularity
        self.groupBy = groupBy
    }

    /// The start of the bucket that contains `time`.
    public func bucketStart(of time: EventTime) -> EventTime {
        switch granularity {
        case .hour:
            return EventTime(startOfHour: time.hourSinceEpoch)
        case .day:
            let civil = CivilTime(epochSeconds: time.seconds)
            return EventTime(seconds: CivilTime(year: civil.year, month: civil.month, day: civil.day).epochSeconds)
        case .month:
            return BillingPeriod(containing: time).start
        }
    }
}

/// Usage in one time bucket (and group, when grouped), by event time. Includes late events billed
/// as adjustments: they happened in this bucket even if they are billed in a later period.
public struct UsageBucket: Sendable, Hashable {
    public var start: EventTime
    /// The group-by value; nil for an ungrouped query.
    public var group: String?
    public var aggregate: UsageAggregate
}

/// A period's billable usage of one metric: its normal usage and, separately, the adjustments
/// billed in it for earlier closed periods.
public struct PeriodTotals: Sendable, Hashable {
    /// Late usage of a closed period, billed in this one.
    public struct Adjustment: Sendable, Hashable {
        public var original: BillingPeriod
        public var aggregate: UsageAggregate
    }

    public var period: BillingPeriod
    /// Usage with event time in this period and billed in it; nil when there was none.
    public var usage: UsageAggregate?
    /// Ordered by original period.
    public var adjustments: [Adjustment]

    public init(period: BillingPeriod, usage: UsageAggregate?, adjustments: [Adjustment]) {
        self.period = period
        self.usage = usage
        self.adjustments = adjustments
    }

    /// The totals with `adjustments` by original period, put in period order.
    public init(period: BillingPeriod, usage: UsageAggregate?, adjustments: [BillingPeriod: UsageAggregate]) {
        self.init(
            period: period, usage: usage,
            adjustments: adjustments.sorted { $0.key < $1.key }.map { Adjustment(original: $0.key, aggregate: $0.value) })
    }
}

extension Array where Element == (hour: Int64, aggregate: UsageAggregate) {
    /// Appends one hour's aggregate to a series ordered by hour, merging it into the last entry
    /// when that is the same hour (rows of one hour from several dimension values).
    mutating func appendMergingHour(_ hour: Int64, _ aggregate: UsageAggregate) throws(LedgerError) {
        if let last = self.last, last.hour == hour {
            var merged = last.aggregate
            try merged.merge(aggregate)
            self[count - 1].aggregate = merged
        } else {
            append((hour, aggregate))
        }
    }
}

/// Distinct values of a property in a period: those billed in the period itself, and those of
/// earlier periods billed in it as adjustments (late events with a value not seen before).
public struct UniqueCount: Sendable, Hashable {
    public var usage: Int
    public var adjustments: Int
    public init(usage: Int, adjustments: Int) {
        self.usage = usage
        self.adjustments = adjustments
    }
}

/// Which reconciliation rows to return; nil matches everything.
public struct ReconciliationFilter: Sendable, Hashable {
    public var period: BillingPeriod?
    public var tenant: String?
    public var agent: String?
    public init(period: BillingPeriod? = nil, tenant: String? = nil, agent: String? = nil) {
        self.period = period
        self.tenant = tenant
        self.agent = agent
    }
}

/// Counts that reconcile: `received == accepted + duplicate + late + rejected` always holds, for
/// every row and every sum of rows.
public struct ReconciliationCounts: Sendable, Hashable {
    public var received: Int64 = 0
    public var accepted: Int64 = 0
    public var duplicate: Int64 = 0
    /// Includes `adjusted`.
    public var late: Int64 = 0
    public var adjusted: Int64 = 0
    public var rejected: Int64 = 0

    public init() {}

    public var balances: Bool { received == accepted + duplicate + late + rejected && adjusted <= late }

    public mutating func add(_ other: ReconciliationCounts) {
        received += other.received
        accepted += other.accepted
        duplicate += other.duplicate
        late += other.late
        adjusted += other.adjusted
        rejected += other.rejected
    }

    mutating func count(_ status: EventStatus) {
        received += 1
        switch status {
        case .accepted: accepted += 1
        case .duplicate: duplicate += 1
        case .late: late += 1
        case .adjusted:
            late += 1
            adjusted += 1
        case .rejected: rejected += 1
        }
    }
}

/// Reconciliation counts of one (period, tenant, agent). The period is the event's own period
/// (by event time), or the period of arrival when the event had no readable timestamp or one
/// outside `EventTime.acceptedRange` (``BillingPeriod/init(explaining:arrivedAt:)``); the tenant
/// is "" when the event had no readable tenant.
public struct ReconciliationRow: Sendable, Hashable {
    public var period: BillingPeriod
    public var tenant: String
    public var agent: String
    public var counts: ReconciliationCounts
}

/// A stored reconciliation row whose period text is not a readable `YYYY-MM`: its counts are
/// still there (they balance on their own), only its period cannot be named.
public struct UnreadableReconciliationRow: Sendable, Hashable {
    /// The period exactly as stored.
    public var storedPeriod: String
    public var tenant: String
    public var agent: String
    public var counts: ReconciliationCounts

    public init(storedPeriod: String, tenant: String, agent: String, counts: ReconciliationCounts) {
        self.storedPeriod = storedPeriod
        self.tenant = tenant
        self.agent = agent
        self.counts = counts
    }
}

extension Sequence where Element == ReconciliationRow {
    /// The sum of the rows' counts.
    public var total: ReconciliationCounts {
        var total = ReconciliationCounts()
        for row in self { total.add(row.counts) }
        return total
    }
}

/// One event of the raw ledger, with everything recorded about its arrival.
public struct LedgerRecord: Sendable, Hashable {
    public var event: UsageEvent
    public var fingerprint: Fingerprint
    /// accepted, adjusted or late.
    public var status: EventStatus
    /// For an adjusted event, the period it is billed in.
    public var billedIn: BillingPeriod?
    public var agent: String
    public var batchSequence: UInt64
    public var batchIndex: Int
    public var receivedAt: EventTime
}

/// A duplicate or rejected event of a batch: what was known about it and why it is not billed.
public struct RefusedEvent: Sendable, Hashable {
    public var batchIndex: Int
    /// duplicate or rejected.
    public var status: EventStatus
    /// The reason for a rejected event; nil for a duplicate.
    public var reason: RejectionReason?
    public var message: String
    public var tenant: String?
    public var metric: String?
    public var timestamp: EventTime?
    /// The fingerprint of a valid event (for a duplicate: the original's).
    public var fingerprint: Fingerprint?
    public var quantity: Quantity?
}
