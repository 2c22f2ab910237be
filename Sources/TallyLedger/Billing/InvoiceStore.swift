public import TallyCore

/// The billing side of a ledger: the aggregate reads invoices are priced from, and the tables
/// the collector owns for billing — final invoices (frozen JSON and its SHA-256) and the record
/// of usage exported to billing platforms.
///
/// Kept apart from ``LedgerStore`` so that the ingest contract stays small; the embedded SQLite
/// store implements both (`SQLiteLedgerStore+Billing.swift`). Like the ledger, calls block: run
/// them through the collector's `LedgerWriter`.
public protocol InvoiceStore: AnyObject {
    /// Hourly aggregate cells of one tenant and metric whose hour lies in `hours`, for one
    /// dimension ("" for the totals), merged per dimension value, restricted by `billing`.
    func billableAggregates(
        tenant: String, metric: String, hours: Range<Int64>, dimension: String, billing: BillingSelection
    ) throws(LedgerError) -> [String: UsageAggregate]

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

    /// Every export record of a tenant (nil: all), by identifier.
    func exportRecords(tenant: String?) throws(LedgerError) -> [ExportRecord]
}

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
    public var lastError: String?
    public var sentAt: EventTime?

    public init(
        identifier: String, tenant: String, metric: String, hour: Int64, value: Quantity, status: Status, attempts: Int,
        lastError: String? = nil, sentAt: EventTime? = nil
    ) {
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
