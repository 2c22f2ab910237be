public import TallyCore

/// An admin's correction of one stored event: void it, or amend its quantity or properties.
///
/// The raw event is never modified or deleted. A correction is its own ledger record, applied to
/// the aggregates in the same transaction, as cells that take the event's current version out
/// and (for an amendment) put the new one in:
/// - the event's period still open: the cells are the period's own (its draft invoice changes);
/// - the period closed: the cells are billed in the earliest open period, as late usage is, so
///   the difference becomes an adjustment line there, priced as the closed period with and
///   without the correction (tiers and free allowances respected).
/// The audit recomputes aggregates from raw events plus corrections (``CorrectionRules/cells(of:groupBy:)``).
/// Corrections are idempotent by the caller's ``key``: the same request again returns the stored
/// record; the key with a different request is refused.
public struct CorrectionRequest: Sendable, Hashable {
    public enum Action: Sendable, Hashable {
        /// Take the event out of billing.
        case void
        /// Replace its quantity and/or its properties (nil keeps the current one).
        case amend(quantity: Quantity?, properties: Properties?)
    }

    /// The caller's idempotency key.
    public var key: String
    public var tenant: String
    /// The event, by its ledger key.
    public var timestamp: EventTime
    public var fingerprint: Fingerprint
    public var action: Action
    public var reason: String
    /// Who asked: the id of the API key used (never the key itself).
    public var actor: String

    public init(
        key: String, tenant: String, timestamp: EventTime, fingerprint: Fingerprint, action: Action, reason: String, actor: String
    ) {
        self.key = key
        self.tenant = tenant
        self.timestamp = timestamp
        self.fingerprint = fingerprint
        self.action = action
        self.reason = reason
        self.actor = actor
    }
}

/// A stored correction: what the event was before and after, where the difference is billed.
public struct CorrectionRecord: Sendable, Hashable {
    public var key: String
    public var tenant: String
    public var metric: String
    public var timestamp: EventTime
    public var fingerprint: Fingerprint
    /// `void` or `amend`.
    public var action: String
    public var quantityBefore: Quantity
    public var propertiesBefore: Properties
    /// The new version; nil for a void.
    public var quantityAfter: Quantity?
    public var propertiesAfter: Properties?
    /// nil: applied to the event's own (open) period; else the open period whose invoice bills
    /// the difference as an adjustment.
    public var billedIn: BillingPeriod?
    public var reason: String
    public var actor: String
    public var createdAt: EventTime

    public init(
        key: String, tenant: String, metric: String, timestamp: EventTime, fingerprint: Fingerprint, action: String,
        quantityBefore: Quantity, propertiesBefore: Properties, quantityAfter: Quantity?, propertiesAfter: Properties?,
        billedIn: BillingPeriod?, reason: String, actor: String, createdAt: EventTime
    ) {
        self.key = key
        self.tenant = tenant
        self.metric = metric
        self.timestamp = timestamp
        self.fingerprint = fingerprint
        self.action = action
        self.quantityBefore = quantityBefore
        self.propertiesBefore = propertiesBefore
        self.quantityAfter = quantityAfter
        self.propertiesAfter = propertiesAfter
        self.billedIn = billedIn
        self.reason = reason
        self.actor = actor
        self.createdAt = createdAt
    }

    /// The event's own period.
    public var period: BillingPeriod { BillingPeriod(containing: timestamp) }

    /// The quantity the correction adds to its metric's sum (negative for a void).
    public func quantityDelta() throws(LedgerError) -> Quantity {
        do { return try (quantityAfter ?? .zero).subtracting(quantityBefore) } catch {
            throw .quantityOverflow("the correction \(key)")
        }
    }
}

/// Which corrections to read; every condition given must hold.
public struct CorrectionFilter: Sendable, Hashable {
    public var tenant: String?
    /// Corrections of events whose time lies here.
    public var eventTimes: Range<EventTime>?
    /// Corrections of one event, by its ledger key.
    public var event: RawKey?

    public init(tenant: String? = nil, eventTimes: Range<EventTime>? = nil, event: RawKey? = nil) {
        self.tenant = tenant
        self.eventTimes = eventTimes
        self.event = event
    }

    /// Whether `record` matches (backends filter in SQL; this is the reference).
    public func matches(_ record: CorrectionRecord) -> Bool {
        if let tenant, record.tenant != tenant { return false }
        if let eventTimes, !eventTimes.contains(record.timestamp) { return false }
        if let event, event != RawKey(timestamp: record.timestamp, fingerprint: record.fingerprint) { return false }
        return true
    }
}

/// What a correction does, decided without I/O (as ``LedgerRules`` decides a batch): the record
/// to store and the aggregate cells to log.
public enum CorrectionRules {
    /// Plans `request` against its event as stored and the event's earlier corrections (in the
    /// order they were made), or refuses it.
    public static func plan(
        _ request: CorrectionRequest, event stored: LedgerRecord?, earlier: [CorrectionRecord], window: LateWindow, now: EventTime,
        groupBy: [String], uniqueCountMetrics: Set<String>, keepsMinimum: Bool = true
    ) throws(LedgerError) -> (record: CorrectionRecord, cells: AggregateCells) {
        guard !request.key.isEmpty, request.key.utf8.count <= 200 else {
            throw .correctionRefused("a correction needs a key (its idempotency key) of 1 to 200 bytes")
        }
        guard !request.reason.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
            throw .correctionRefused("a correction needs a reason")
        }
        guard let stored, stored.event.tenant == request.tenant else {
            throw .correctionRefused(
                "tenant '\(request.tenant)' has no stored event \(request.fingerprint) at \(request.timestamp) (a refused or duplicate arrival is not billed and needs no correction)"
            )
        }
        switch stored.status {
        case .accepted, .adjusted: break
        case .late, .duplicate, .rejected:
            throw .correctionRefused(
                "the event \(request.fingerprint) is \(stored.status.rawValue): it is not billed, so there is nothing to correct")
        }
        guard !uniqueCountMetrics.contains(stored.event.metric) else {
            throw .correctionRefused(
                "the metric '\(stored.event.metric)' counts unique values: a correction cannot take one event out of a distinct count")
        }
        // The event's current version: the last earlier correction's result.
        var current = (quantity: stored.event.quantity, properties: stored.event.properties)
        for earlier in earlier {
            guard let after = earlier.quantityAfter else {
                throw .correctionRefused("the event \(request.fingerprint) was voided by correction '\(earlier.key)'")
            }
            current = (after, earlier.propertiesAfter ?? current.properties)
        }
        var after: (quantity: Quantity, properties: Properties)?
        switch request.action {
        case .void: after = nil
        case .amend(let quantity, let properties):
            guard quantity != nil || properties != nil else { throw .correctionRefused("an amendment needs a new quantity or new properties") }
            if let quantity, quantity < .zero { throw .correctionRefused("a quantity is never negative (void the event instead)") }
            after = (quantity ?? current.quantity, properties ?? current.properties)
            if after?.quantity == current.quantity && after?.properties == current.properties {
                throw .correctionRefused("the amendment changes nothing: the event already has that quantity and those properties")
            }
        }
        let own = BillingPeriod(containing: stored.event.timestamp)
        let billedIn = window.isOpen(own, now: now) ? nil : window.earliestOpenPeriod(now: now)
        let record = CorrectionRecord(
            key: request.key, tenant: request.tenant, metric: stored.event.metric, timestamp: stored.event.timestamp,
            fingerprint: stored.fingerprint, action: after == nil ? "void" : "amend", quantityBefore: current.quantity,
            propertiesBefore: current.properties, quantityAfter: after?.quantity, propertiesAfter: after?.properties, billedIn: billedIn,
            reason: request.reason, actor: request.actor, createdAt: now)
        return (record, try cells(of: record, groupBy: groupBy, keepsMinimum: keepsMinimum))
    }

    /// The aggregate cells of a correction: the version before taken out (its sum and count
    /// negated; its maximum and latest left as they were, which merging cannot lower), and the
    /// version after put in. The audit adds the same cells to what it recomputes from raw events.
    public static func cells(of record: CorrectionRecord, groupBy: [String], keepsMinimum: Bool = true) throws(LedgerError) -> AggregateCells {
        // The version before, as its own event made its cells (property and quantity-band
        // dimensions alike), with sum and count negated: max, min and latest stay as they were.
        var before = AggregateCells()
        try before.add(
            UsageEvent(
                tenant: record.tenant, metric: record.metric, quantity: record.quantityBefore, timestamp: record.timestamp, id: nil,
                properties: record.propertiesBefore), fingerprint: record.fingerprint, billedIn: record.billedIn, groupBy: groupBy,
            keepsMinimum: keepsMinimum)
        var cells = AggregateCells()
        for (key, aggregate) in before.cells {
            var out = aggregate
            out.sum = Quantity(nanos: -aggregate.sum.nanos)
            out.count = -aggregate.count
            try cells.add(out, at: key)
        }
        if let quantity = record.quantityAfter {
            let event = UsageEvent(
                tenant: record.tenant, metric: record.metric, quantity: quantity, timestamp: record.timestamp, id: nil,
                properties: record.propertiesAfter ?? record.propertiesBefore)
            try cells.add(event, fingerprint: record.fingerprint, billedIn: record.billedIn, groupBy: groupBy, keepsMinimum: keepsMinimum)
        }
        return cells
    }
}

extension CorrectionRules {
    /// A request whose key is already stored must be the same request: the same event, the same
    /// action and new values, the same reason. Otherwise the key was reused for another one.
    public static func requireSame(_ request: CorrectionRequest, _ stored: CorrectionRecord) throws(LedgerError) {
        var same = stored.tenant == request.tenant && stored.timestamp == request.timestamp && stored.fingerprint == request.fingerprint
        same = same && stored.reason == request.reason
        switch request.action {
        case .void: same = same && stored.action == "void"
        case .amend(let quantity, let properties):
            same = same && stored.action == "amend"
            if let quantity { same = same && stored.quantityAfter == quantity }
            if let properties { same = same && stored.propertiesAfter == properties }
        }
        guard same else {
            throw .correctionRefused(
                "the key '\(request.key)' was already used for another correction (of \(stored.fingerprint) at \(stored.timestamp))")
        }
    }
}

/// What a set of correction requests writes, as both backends compute it inside their
/// transaction: each request's record (the stored one for a key seen before), the new records to
/// insert, their cells, and how much any one cell can grow (for the overflow bound).
struct PlannedCorrections {
    var records: [CorrectionRecord] = []
    var cells = AggregateCells()
    var growth = Quantity.zero

    /// Plans `requests` in order; `stored` finds a key's record, `event` the raw event (locked,
    /// where the backend needs it), `earlier` the event's corrections so far, `insert` writes a
    /// new record (so a later request of the same event sees it).
    static func plan(
        _ requests: [CorrectionRequest], now: EventTime, configuration: LedgerConfiguration,
        stored: (String) throws(LedgerError) -> CorrectionRecord?,
        event: (RawKey) throws(LedgerError) -> LedgerRecord?,
        earlier: (RawKey) throws(LedgerError) -> [CorrectionRecord],
        insert: (CorrectionRecord) throws(LedgerError) -> Void
    ) throws(LedgerError) -> PlannedCorrections {
        var result = PlannedCorrections()
        let uniqueCountMetrics = Set(configuration.uniqueCounts.map(\.metric))
        for request in requests {
            if let stored = try stored(request.key) {
                try CorrectionRules.requireSame(request, stored)
                result.records.append(stored)
                continue
            }
            let key = RawKey(timestamp: request.timestamp, fingerprint: request.fingerprint)
            let found = try event(key)
            let metric = found?.event.metric ?? ""
            if configuration.levelMetrics.contains(metric) {
                // Its level holds until the next event: taking it out would change another
                // event's level change too, which a correction's own cells cannot say.
                throw .correctionRefused("\(metric) is a weighted_sum metric: its events set a level over time and cannot be corrected one by one")
            }
            let planned = try CorrectionRules.plan(
                request, event: found, earlier: try earlier(key), window: configuration.lateWindow, now: now,
                groupBy: configuration.groupBy(of: metric), uniqueCountMetrics: uniqueCountMetrics,
                keepsMinimum: configuration.keepsMinimum(metric))
            try insert(planned.record)
            try result.cells.merge(planned.cells)
            do { result.growth = try result.growth.adding(planned.record.quantityAfter ?? .zero) } catch {
                throw .quantityOverflow("a correction")
            }
            result.records.append(planned.record)
        }
        return result
    }
}
