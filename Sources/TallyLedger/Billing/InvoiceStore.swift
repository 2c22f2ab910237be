public import TallyCore

// The billing side of ``LedgerStore``'s values: which cells a billing read takes, final
// invoices and export records.
/// Which aggregate cells a billing read takes, by the period they are billed in.
public enum BillingSelection: Sendable, Hashable {
    /// Usage billed in its own period (on-time events).
    case ownPeriod
    /// Late usage billed as an adjustment in the given period.
    case adjustmentsIn(BillingPeriod)
    /// Usage billed in its own period or as an adjustment in a period before the given one:
    /// what invoices before that period had billed.
    case billedBefore(BillingPeriod)
    /// `billedBefore(p)` plus `adjustmentsIn(p)`.
    case billedThrough(BillingPeriod)
}

/// A final invoice as frozen: its canonical JSON and the SHA-256 of those bytes (hex).
public struct FinalInvoiceRecord: Sendable, Hashable {
    public var tenant: String
    public var period: BillingPeriod
    public var json: String
    public var sha256: String
    public var finalizedAt: EventTime

    public init(tenant: String, period: BillingPeriod, json: String, sha256: String, finalizedAt: EventTime) {
        self.tenant = tenant
        self.period = period
        self.json = json
        self.sha256 = sha256
        self.finalizedAt = finalizedAt
    }
}

/// What was sent to a billing platform for one usage record: the value, and whether the
/// platform acknowledged it. `identifier` is stable, so a resend is deduplicated by the platform.
public struct ExportRecord: Sendable, Hashable {
    public enum Status: String, Sendable, Hashable {
        case pending, sent, failed
    }

    public var identifier: String
    public var tenant: String
    public var metric: String
    /// Start of the hour the record covers.
    public var hour: Int64
    /// The quantity sent (exact decimal text).
    public var value: Quantity
    public var status: Status
    public var attempts: Int
    /// The platform's last answer when it was not a plain success (or the failure to reach it).
    public var lastError: String?
    /// When the platform acknowledged the record.
    public var sentAt: EventTime?
    /// When the record was last sent (acknowledged or not).
    public var attemptedAt: EventTime?

    public init(
        identifier: String, tenant: String, metric: String, hour: Int64, value: Quantity, status: Status, attempts: Int,
        lastError: String? = nil, sentAt: EventTime? = nil, attemptedAt: EventTime? = nil
    ) {
        self.attemptedAt = attemptedAt
        self.identifier = identifier
        self.tenant = tenant
        self.metric = metric
        self.hour = hour
        self.value = value
        self.status = status
        self.attempts = attempts
        self.lastError = lastError
        self.sentAt = sentAt
    }
}
