/// A calendar month in UTC: the default billing period. Its identifier is `YYYY-MM`.
public struct BillingPeriod: Sendable, Hashable, Comparable, CustomStringConvertible {
    public let year: Int64
    public let month: Int64

    public init?(year: Int64, month: Int64) {
        guard (1...12).contains(month), (1...9999).contains(year) else { return nil }
        self.year = year
        self.month = month
    }

    /// The period that contains `time`.
    public init(containing time: EventTime) {
        let civil = CivilTime(epochSeconds: time.seconds)
        self.year = civil.year
        self.month = civil.month
    }

    /// The period under which an event is explained in reconciliation: the period of its own
    /// time when it has one in ``EventTime/acceptedRange``, else the period of its arrival
    /// (`arrivedAt`). Always a period that prints and parses back, whatever the event held.
    public init(explaining timestamp: EventTime?, arrivedAt: EventTime) {
        if let timestamp, EventTime.acceptedRange.contains(timestamp) {
            self.init(containing: timestamp)
        } else {
            self.init(containing: arrivedAt)
        }
    }

    /// Parses `YYYY-MM`.
    public init?(_ text: String) {
        let parts = text.split(separator: "-")
        guard parts.count == 2, parts[0].count == 4, parts[1].count == 2, let year = Int64(parts[0]),
            let month = Int64(parts[1])
        else { return nil }
        self.init(year: year, month: month)
    }

    /// The first instant of the period.
    public var start: EventTime {
        EventTime(seconds: CivilTime(year: year, month: month, day: 1).epochSeconds)
    }

    /// The first instant after the period (the next period's start).
    public var end: EventTime { next.start }

    public var next: BillingPeriod {
        month == 12 ? BillingPeriod(unchecked: year + 1, 1) : BillingPeriod(unchecked: year, month + 1)
    }

    public var previous: BillingPeriod {
        month == 1 ? BillingPeriod(unchecked: year - 1, 12) : BillingPeriod(unchecked: year, month - 1)
    }

    private init(unchecked year: Int64, _ month: Int64) {
        self.year = year
        self.month = month
    }

    public func contains(_ time: EventTime) -> Bool { time >= start && time < end }

    public static func < (lhs: BillingPeriod, rhs: BillingPeriod) -> Bool { (lhs.year, lhs.month) < (rhs.year, rhs.month) }

    public var description: String {
        let y = String(year)
        let m = String(month)
        return String(repeating: "0", count: max(0, 4 - y.count)) + y + "-" + (m.count == 1 ? "0" : "") + m
    }
}

extension BillingPeriod {
    /// The period that contains hour `hour` (since the epoch).
    public init(containingHour hour: Int64) {
        self.init(containing: EventTime(startOfHour: hour))
    }
}
