public import TallyCore

/// Which events a trace looks for: one tenant's events with a caller's idempotency id, or the
/// event of one fingerprint, whose event time lies in `times`.
///
/// The raw ledger is keyed by (event time, fingerprint) and has no index by id: such an index
/// would be written in random order by every insert (the cliff `SQLiteSchema` describes). A
/// trace therefore scans the time range on the ledger's own key — one month of one large
/// tenant is a few seconds at most — and says which range it searched. Given the event time
/// (and metric) a caller can compute the fingerprint and narrow the range to that instant.
public struct TraceQuery: Sendable, Hashable {
    public enum Key: Sendable, Hashable {
        /// The caller's idempotency id (`"id"` in the event JSON).
        case id(String)
        case fingerprint(Fingerprint)
    }

    public var tenant: String
    public var key: Key
    /// Event times searched in the raw ledger. Refused events are searched whatever their time
    /// (a `too_old` event lies outside any recent range by definition).
    public var times: Range<EventTime>

    public init(tenant: String, key: Key, times: Range<EventTime>) {
        self.tenant = tenant
        self.key = key
        self.times = times
    }
}

/// One arrival of an event that was not stored as new: a later copy (a client retry, a resent
/// batch after a lost ack) recorded as a duplicate of the raw event of the same fingerprint.
public struct TraceArrival: Sendable, Hashable {
    public var agent: String
    public var batchSequence: UInt64
    public var batchIndex: Int
    public var receivedAt: EventTime
    public var timestamp: EventTime
    public var fingerprint: Fingerprint
    public var quantity: Quantity

    public init(
        agent: String, batchSequence: UInt64, batchIndex: Int, receivedAt: EventTime, timestamp: EventTime, fingerprint: Fingerprint,
        quantity: Quantity
    ) {
        self.agent = agent
        self.batchSequence = batchSequence
        self.batchIndex = batchIndex
        self.receivedAt = receivedAt
        self.timestamp = timestamp
        self.fingerprint = fingerprint
        self.quantity = quantity
    }
}

/// An event the collector refused (rejected), with what was readable of it and why.
public struct TraceRefusal: Sendable, Hashable {
    public var agent: String
    public var batchSequence: UInt64
    public var batchIndex: Int
    public var receivedAt: EventTime
    public var reason: RejectionReason
    public var field: String?
    public var message: String
    public var metric: String?
    public var timestamp: EventTime?
    public var fingerprint: Fingerprint?
    public var quantity: Quantity?
    public var id: String?
    public var properties: Properties?

    public init(
        agent: String, batchSequence: UInt64, batchIndex: Int, receivedAt: EventTime, reason: RejectionReason, field: String?,
        message: String, metric: String?, timestamp: EventTime?, fingerprint: Fingerprint?, quantity: Quantity?, id: String?,
        properties: Properties?
    ) {
        self.agent = agent
        self.batchSequence = batchSequence
        self.batchIndex = batchIndex
        self.receivedAt = receivedAt
        self.reason = reason
        self.field = field
        self.message = message
        self.metric = metric
        self.timestamp = timestamp
        self.fingerprint = fingerprint
        self.quantity = quantity
        self.id = id
        self.properties = properties
    }
}

/// Everything the ledger holds about the events a ``TraceQuery`` names.
public struct TraceRecords: Sendable, Hashable {
    /// The raw ledger's events (accepted, adjusted or late), in (event time, fingerprint) order.
    public var events: [LedgerRecord]
    /// Later arrivals of those events, by the time they were received.
    public var duplicates: [TraceArrival]
    /// Refused arrivals of the tenant's events with this id or fingerprint, by time received.
    public var refusals: [TraceRefusal]

    public init(events: [LedgerRecord] = [], duplicates: [TraceArrival] = [], refusals: [TraceRefusal] = []) {
        self.events = events
        self.duplicates = duplicates
        self.refusals = refusals
    }

    /// Puts each list in its documented order (backends read them in any).
    public mutating func sort() {
        events.sort { ($0.event.timestamp, $0.fingerprint) < ($1.event.timestamp, $1.fingerprint) }
        duplicates.sort { ($0.receivedAt, $0.agent, $0.batchSequence, $0.batchIndex) < ($1.receivedAt, $1.agent, $1.batchSequence, $1.batchIndex) }
        refusals.sort { ($0.receivedAt, $0.agent, $0.batchSequence, $0.batchIndex) < ($1.receivedAt, $1.agent, $1.batchSequence, $1.batchIndex) }
    }
}
