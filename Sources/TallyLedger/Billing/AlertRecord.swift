public import TallyCore

/// One usage alert: a tenant crossed a threshold (`alert`, the rule's name) in a billing period.
/// There is at most one record per (tenant, alert, period) — the ``identifier`` is derived from
/// the three — claimed before anything is sent (``LedgerStore/claimAlert(_:)``), so a threshold
/// alerts once per period whichever collector finds it first and however often it is checked.
/// The webhook is then sent until the receiver answers 2xx; each attempt is leased
/// (``LedgerStore/leaseAlert(identifier:now:until:)``), so two collectors never send the same
/// record at once.
public struct AlertRecord: Sendable, Hashable {
    public enum Status: String, Sendable, Hashable {
        /// Not yet acknowledged by the receiver: sent again at ``AlertRecord/nextAttemptAt``.
        case pending
        /// The receiver answered 2xx.
        case delivered
    }

    /// `alert_` and 32 hex digits of SHA-256 over the length-prefixed tenant, alert and period:
    /// stable, the same on every collector, safe in a header.
    public var identifier: String
    public var tenant: String
    /// The rule's name in the pricing file.
    public var alert: String
    public var period: BillingPeriod
    /// The metric compared, nil for an amount on the invoice total.
    public var metric: String?
    /// `quantity`, `percent_of_free` or `amount`.
    public var kind: String
    /// The threshold as configured when it was crossed (`1000000`, `80`, `500.00 USD`).
    public var threshold: String
    /// What was compared with it when the crossing was found: the quantity, or the amount with
    /// its currency; for a percentage, the quantity (the allowance is in ``limit``).
    public var observed: String
    /// The value the observed figure had to reach (for a percentage: that share of the allowance).
    public var limit: String
    /// When the collector found the crossing.
    public var crossedAt: EventTime
    public var status: Status
    /// Webhook attempts so far.
    public var attempts: Int
    /// The receiver's last answer when it was not 2xx, or the failure to reach it.
    public var lastError: String?
    public var attemptedAt: EventTime?
    public var deliveredAt: EventTime?
    /// A pending record is not sent before this instant: the end of a running attempt's lease,
    /// or the backoff after a failed one.
    public var nextAttemptAt: EventTime

    public init(
        tenant: String, alert: String, period: BillingPeriod, metric: String?, kind: String, threshold: String, observed: String,
        limit: String, crossedAt: EventTime, status: Status = .pending, attempts: Int = 0, lastError: String? = nil,
        attemptedAt: EventTime? = nil, deliveredAt: EventTime? = nil, nextAttemptAt: EventTime? = nil
    ) {
        self.identifier = Self.identifier(tenant: tenant, alert: alert, period: period)
        self.tenant = tenant
        self.alert = alert
        self.period = period
        self.metric = metric
        self.kind = kind
        self.threshold = threshold
        self.observed = observed
        self.limit = limit
        self.crossedAt = crossedAt
        self.status = status
        self.attempts = attempts
        self.lastError = lastError
        self.attemptedAt = attemptedAt
        self.deliveredAt = deliveredAt
        self.nextAttemptAt = nextAttemptAt ?? crossedAt
    }

    /// The identifier of (tenant, alert, period).
    public static func identifier(tenant: String, alert: String, period: BillingPeriod) -> String {
        let key = [tenant, alert, period.description].map { "\($0.utf8.count):\($0)" }.joined()
        return "alert_" + SHA256Digest.hex(key).prefix(32)
    }
}
