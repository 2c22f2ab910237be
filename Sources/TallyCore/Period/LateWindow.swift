/// When an event still counts towards its own billing period, when it becomes a late adjustment,
/// and when it is refused as too old or from the future. Pure: the answer depends only on the
/// event time, `now` and the settings, so a replayed batch is classified the same way.
///
/// A period P is open while `now < P.end + grace`. The earliest open period at `now` is the one
/// whose invoice comes next; a late event (its own period closed) is billed there as an
/// adjustment under the `adjust` policy, or refused with reason `late` under `reject`.
public struct LateWindow: Sendable, Hashable {
    /// What happens to an event whose billing period is closed.
    public enum Policy: String, Sendable, Hashable, CaseIterable {
        /// Counted against the earliest open period, tagged with its original period.
        case adjust
        /// Refused with reason `late`; still kept in the ledger.
        case reject
    }

    /// How long a period stays open after its end.
    public var grace: Duration
    /// Events older than `now - lateArrivalLimit` are refused as `too_old`.
    public var lateArrivalLimit: Duration
    /// Events newer than `now + maxFutureSkew` are refused as `future_timestamp`.
    public var maxFutureSkew: Duration
    public var policy: Policy

    public init(
        grace: Duration = .seconds(72 * 3600), lateArrivalLimit: Duration = .seconds(35 * 86_400),
        maxFutureSkew: Duration = EventLimits.standard.maxFutureSkew, policy: Policy = .adjust
    ) {
        self.grace = grace
        self.lateArrivalLimit = lateArrivalLimit
        self.maxFutureSkew = maxFutureSkew
        self.policy = policy
    }

    public static let standard = LateWindow()

    /// Whether `period` is still open at `now` (`now < period.end + grace`).
    public func isOpen(_ period: BillingPeriod, now: EventTime) -> Bool {
        now < period.end.advanced(by: grace)
    }

    /// The earliest period still open at `now`: the one whose invoice comes next.
    public func earliestOpenPeriod(now: EventTime) -> BillingPeriod {
        BillingPeriod(containing: now.advanced(by: .zero - grace))
    }

    /// Classifies an event time. Checks run in this order: future, too old, open period, policy.
    /// Boundaries: `now + maxFutureSkew` is accepted, `now - lateArrivalLimit` is not too old, and
    /// a period is closed from the instant `now == end + grace`.
    public func classify(_ timestamp: EventTime, now: EventTime) -> LateClassification {
        if timestamp > now.advanced(by: maxFutureSkew) { return .future }
        if timestamp < now.advanced(by: .zero - lateArrivalLimit) { return .tooOld }
        let period = BillingPeriod(containing: timestamp)
        if isOpen(period, now: now) { return .onTime(period) }
        switch policy {
        case .adjust: return .adjustment(original: period, billedIn: earliestOpenPeriod(now: now))
        case .reject: return .late(period)
        }
    }
}

/// Where an event's usage goes, decided by ``LateWindow/classify(_:now:)``.
public enum LateClassification: Sendable, Hashable {
    /// Its period is open: counted as normal usage of that period.
    case onTime(BillingPeriod)
    /// Its period is closed, policy `adjust`: billed in `billedIn`, shown as an adjustment for
    /// `original`.
    case adjustment(original: BillingPeriod, billedIn: BillingPeriod)
    /// Its period is closed, policy `reject`: refused with reason `late`, kept.
    case late(BillingPeriod)
    /// Older than the late-arrival limit: refused with reason `too_old`, kept.
    case tooOld
    /// Beyond the allowed clock skew: refused with reason `future_timestamp`, kept.
    case future
}
