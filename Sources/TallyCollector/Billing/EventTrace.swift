public import TallyCore
public import TallyLedger
import TallyPricing

/// The answer to "was this event billed, and where?" (`GET /v1/events/trace`, `tallyctl trace`):
/// for each event of a tenant with the asked id (or fingerprint), its fingerprint and canonical
/// form, the batch that brought it and every later copy, its outcome, the aggregate cells it
/// is counted in (with their current values), and the invoice lines it is part of, draft or
/// final; then the tenant's refused arrivals with that id, each with its reason. An event the
/// collector never saw gives no events, no refusals and a summary that says so, with the time
/// range searched.
public struct EventTraceReport: Codable, Sendable, Hashable {
    /// What was searched.
    public struct Searched: Codable, Sendable, Hashable {
        public var tenant: String
        public var id: String?
        public var fingerprint: String?
        /// Event times searched in the raw ledger, `from` inclusive, `to` exclusive.
        public var from: String
        public var to: String
    }

    /// One arrival: which agent's batch carried the event, at which index, and when the
    /// collector received it.
    public struct Arrival: Codable, Sendable, Hashable {
        public var agent: String
        public var batch: UInt64
        public var index: Int
        public var receivedAt: String
    }

    /// An aggregate cell the event is counted in, with the cell's value now.
    public struct Cell: Codable, Sendable, Hashable {
        /// hour, day or month.
        public var grain: String
        /// The first instant of the cell's bucket.
        public var bucket: String
        /// The group-by property, nil for the metric's total.
        public var dimension: String?
        public var value: String?
        /// For late usage billed as an adjustment: the period it is billed in.
        public var billedIn: String?
        public var sum: String
        public var count: Int64
        public var max: String
        public var latest: String
    }

    /// An invoice line the event's usage is part of.
    public struct Line: Codable, Sendable, Hashable {
        public var period: String
        /// draft or final.
        public var status: String
        /// The final invoice's SHA-256, which a reader can check the served document against.
        public var sha256: String?
        public var description: String
        public var plan: String
        public var segmentStart: String
        public var segmentEnd: String
        public var quantity: String
        public var amount: String
        public var currency: String
        /// For an adjustment line: the closed period whose late usage it bills.
        public var adjusts: String?
    }

    public struct Event: Codable, Sendable, Hashable {
        public var fingerprint: String
        /// The canonical encoding the fingerprint is taken over (`protocol/FINGERPRINT.md`), hex.
        public var canonical: String
        /// id (keyed by tenant, metric, time and id) or fields (no id: every field).
        public var canonicalForm: String
        public var tenant: String
        public var metric: String
        public var quantity: String
        public var timestamp: String
        public var id: String?
        public var properties: [String: String]
        /// accepted, adjusted or late.
        public var outcome: String
        /// The event's own period (by event time).
        public var period: String
        /// The period whose invoice bills it: its own, or for late usage the open period the
        /// adjustment went to; nil when it is not billed (late, rejected by the late policy).
        public var billedIn: String?
        public var explanation: String
        public var firstArrival: Arrival
        /// How many times the collector received it: the first arrival and every duplicate.
        public var received: Int
        public var duplicates: [Arrival]
        public var cells: [Cell]
        public var invoiceLines: [Line]
        /// Where the event's money is, or why there is none, in a sentence.
        public var billing: String
        /// Admins' corrections of the event, in the order made; its cells and lines include them.
        public var corrections: [CorrectionAnswer.Correction]
    }

    /// An arrival of the tenant's event that the collector refused.
    public struct Refusal: Codable, Sendable, Hashable {
        public var arrival: Arrival
        public var reason: String
        public var field: String?
        public var message: String
        public var metric: String?
        public var timestamp: String?
        public var fingerprint: String?
        public var quantity: String?
    }

    public var searched: Searched
    /// True when the ledger holds anything of the event (stored or refused).
    public var found: Bool
    public var summary: String
    public var events: [Event]
    public var refusals: [Refusal]
}

extension Invoicing {
    /// The trace of a tenant's event by id or fingerprint, over the event times in `query`.
    public func trace(_ query: TraceQuery) async throws(BillingError) -> EventTraceReport {
        let pricing = self.pricing
        // Records and cells from one snapshot, so that the cells' values include the event.
        let (records, cells, corrections) = try await onLedger(readOnly: true) { store throws(BillingError) in
            do throws(LedgerError) {
                return try store.withSnapshot { () throws(LedgerError) -> (TraceRecords, [[EventTraceReport.Cell]], [[CorrectionRecord]]) in
                    let records = try store.traceRecords(query)
                    let cells = try records.events.map { (record: LedgerRecord) throws(LedgerError) in try Self.cells(of: record, in: store) }
                    let corrections = try records.events.map { (record: LedgerRecord) throws(LedgerError) in
                        try store.corrections(CorrectionFilter(event: RawKey(timestamp: record.event.timestamp, fingerprint: record.fingerprint)))
                    }
                    return (records, cells, corrections)
                }
            } catch {
                throw .ledger(error)
            }
        }
        var events: [EventTraceReport.Event] = []
        for (offset, record) in records.events.enumerated() {
            let duplicates = records.duplicates.filter { $0.fingerprint == record.fingerprint && $0.timestamp == record.event.timestamp }
            let billed = Self.billedPeriod(of: record)
            var lines: [EventTraceReport.Line] = []
            var billing: String
            if let billed {
                (lines, billing) = await invoiceLines(of: record, billedIn: billed, pricing: pricing)
            } else {
                billing =
                    "not billed: its period \(BillingPeriod(containing: record.event.timestamp)) had closed and the late policy rejects late events"
            }
            if lines.isEmpty, billed != nil, pricing != nil, !billing.hasPrefix("not") {
                billing = "no invoice line: \(billing)"
            }
            if let last = corrections[offset].last {
                if last.quantityAfter == nil, last.billedIn == nil {
                    lines = []
                    billing = "voided by correction '\(last.key)' while its period was open: taken out of the \(last.period) invoice, not billed"
                } else if let later = last.billedIn {
                    billing +=
                        "; corrected by '\(last.key)' after \(last.period) closed: the difference is the adjustment line for \(last.period) on the \(later) invoice"
                } else {
                    billing += " (as amended by correction '\(last.key)')"
                }
            }
            events.append(
                EventTraceReport.Event(
                    fingerprint: record.fingerprint.description, canonical: Hex.encode(CanonicalEncoding.bytes(of: record.event)),
                    canonicalForm: record.event.id == nil ? "fields" : "id", tenant: record.event.tenant, metric: record.event.metric,
                    quantity: record.event.quantity.description, timestamp: record.event.timestamp.description, id: record.event.id,
                    properties: Dictionary(record.event.properties.map { ($0.key, $0.value) }, uniquingKeysWith: { _, last in last }),
                    outcome: record.status.rawValue, period: BillingPeriod(containing: record.event.timestamp).description,
                    billedIn: billed?.description, explanation: Self.explanation(of: record, duplicates: duplicates.count),
                    firstArrival: .init(
                        agent: record.agent, batch: record.batchSequence, index: record.batchIndex, receivedAt: record.receivedAt.description),
                    received: 1 + duplicates.count,
                    duplicates: duplicates.map {
                        .init(agent: $0.agent, batch: $0.batchSequence, index: $0.batchIndex, receivedAt: $0.receivedAt.description)
                    },
                    cells: cells[offset], invoiceLines: lines, billing: billing,
                    corrections: corrections[offset].map { CorrectionAnswer.Correction($0, alreadyApplied: true) }))
            if let last = corrections[offset].last {
                let what = last.quantityAfter.map { "amended to \($0)" } ?? "voided"
                events[events.count - 1].explanation += "; \(what) by correction '\(last.key)' (\(last.reason))"
                if corrections[offset].count > 1 { events[events.count - 1].explanation += " after \(corrections[offset].count - 1) earlier" }
            }
        }
        let refusals = records.refusals.map { refusal in
            EventTraceReport.Refusal(
                arrival: .init(
                    agent: refusal.agent, batch: refusal.batchSequence, index: refusal.batchIndex, receivedAt: refusal.receivedAt.description),
                reason: refusal.reason.rawValue, field: refusal.field, message: refusal.message, metric: refusal.metric,
                timestamp: refusal.timestamp?.description, fingerprint: refusal.fingerprint?.description, quantity: refusal.quantity?.description)
        }
        var searched = EventTraceReport.Searched(
            tenant: query.tenant, id: nil, fingerprint: nil, from: query.times.lowerBound.description, to: query.times.upperBound.description)
        switch query.key {
        case .id(let id): searched.id = id
        case .fingerprint(let fingerprint): searched.fingerprint = fingerprint.description
        }
        return EventTraceReport(
            searched: searched, found: !events.isEmpty || !refusals.isEmpty,
            summary: Self.summary(query: query, events: events, refusals: refusals), events: events, refusals: refusals)
    }

    /// The period whose invoice bills the event, nil when none does.
    static func billedPeriod(of record: LedgerRecord) -> BillingPeriod? {
        switch record.status {
        case .accepted: BillingPeriod(containing: record.event.timestamp)
        case .adjusted: record.billedIn
        case .late, .duplicate, .rejected: nil
        }
    }

    static func explanation(of record: LedgerRecord, duplicates: Int) -> String {
        let period = BillingPeriod(containing: record.event.timestamp)
        var text: String
        switch record.status {
        case .accepted: text = "accepted: billed once, in its own period \(period)"
        case .adjusted:
            text =
                "adjusted: its period \(period) had closed when it arrived; billed once, as an adjustment on the "
                + "\(record.billedIn?.description ?? "next open") invoice"
        case .late: text = "late: its period \(period) had closed when it arrived; kept in the ledger, not billed (late policy: reject)"
        case .duplicate, .rejected: text = record.status.rawValue
        }
        if duplicates > 0 {
            text +=
                "; received \(duplicates + 1) times, the \(duplicates) later \(duplicates == 1 ? "copy was" : "copies were") counted as duplicate and not billed"
        }
        return text
    }

    static func summary(query: TraceQuery, events: [EventTraceReport.Event], refusals: [EventTraceReport.Refusal]) -> String {
        let what: String =
            switch query.key {
            case .id(let id): "an event with id '\(id)'"
            case .fingerprint(let fingerprint): "the event of fingerprint \(fingerprint)"
            }
        if events.isEmpty && refusals.isEmpty {
            return "The collector never received \(what) for tenant '\(query.tenant)' with an event time in "
                + "[\(query.times.lowerBound), \(query.times.upperBound)): not stored, not refused. "
                + "It may be older (give from and to), still in an agent's spool (tallyctl spool inspect --id), or never sent."
        }
        var parts: [String] = []
        for event in events {
            parts.append("\(event.metric) at \(event.timestamp): \(event.explanation)")
        }
        for refusal in refusals {
            parts.append("refused (\(refusal.reason)) from \(refusal.arrival.agent) batch \(refusal.arrival.batch): \(refusal.message)")
        }
        return parts.joined(separator: ". ")
    }

    /// The cells `record` is counted in, at every grain, with their stored values.
    static func cells(of record: LedgerRecord, in store: any LedgerStore) throws(LedgerError) -> [EventTraceReport.Cell] {
        guard record.status == .accepted || record.status == .adjusted else { return [] }
        var own = AggregateCells()
        let billedIn = record.status == .adjusted ? record.billedIn : nil
        try own.add(record.event, fingerprint: record.fingerprint, billedIn: billedIn, groupBy: store.configuration.groupBy(of: record.event.metric))
        var result: [EventTraceReport.Cell] = []
        for grain in AggregateGrain.allCases {
            for key in try own.rolledUp(to: grain).cells.keys.sorted() {
                let hours: Range<Int64> =
                    switch grain {
                    case .hour: key.hour..<(key.hour + 1)
                    case .day: key.hour..<(key.hour + 24)
                    case .month: key.hour..<BillingPeriod(containingHour: key.hour).end.hourSinceEpoch
                    }
                var stored: UsageAggregate?
                try store.forEachCell(
                    tenant: key.tenant, metric: key.metric, dimension: key.dimension, hours: hours, coarsest: grain,
                    billing: key.billedIn.map { .adjustmentsIn($0) } ?? .ownPeriod
                ) { (_: Int64, value: String, aggregate: UsageAggregate) throws(LedgerError) in
                    guard value == key.value else { return }
                    if stored == nil { stored = aggregate } else { try stored?.merge(aggregate) }
                }
                guard let stored else { throw .corruptRow("the \(grain) cell \(key) of a stored event is missing") }
                result.append(
                    EventTraceReport.Cell(
                        grain: grain.rawValue, bucket: EventTime(startOfHour: key.hour).description,
                        dimension: key.dimension.isEmpty ? nil : key.dimension, value: key.dimension.isEmpty ? nil : key.value,
                        billedIn: key.billedIn?.description, sum: stored.sum.description, count: stored.count, max: stored.max.description,
                        latest: stored.latest.quantity.description))
            }
        }
        return result
    }

    /// The lines of the invoice of `billedIn` that bill `record`'s usage, and a sentence.
    func invoiceLines(
        of record: LedgerRecord, billedIn: BillingPeriod, pricing: AggregatePricing?
    ) async -> ([EventTraceReport.Line], String) {
        guard let pricing else { return ([], "no pricing file is configured: usage only, no invoices") }
        guard let metric = pricing.config.metric(named: record.event.metric) else {
            return ([], "not priced: the pricing file has no metric '\(record.event.metric)'")
        }
        let properties = Dictionary(record.event.properties.map { ($0.key, $0.value) }, uniquingKeysWith: { _, last in last })
        guard metric.matches(properties) else {
            return ([], "not counted: the metric '\(metric.name)' filters it out by its properties")
        }
        let view: InvoiceView
        do {
            view = try await invoice(tenant: record.event.tenant, period: billedIn)
        } catch {
            return ([], "the \(billedIn) invoice cannot be read: \(error)")
        }
        let document = view.invoice
        let ownPeriod = BillingPeriod(containing: record.event.timestamp)
        let adjusts = record.status == .adjusted ? ownPeriod.description : nil
        // The plan in force at the event's time: the segment of its own period holding it. An
        // adjustment line carries the segment of the closed period it adjusts.
        var lines: [EventTraceReport.Line] = []
        // The document calls an adjustment line's kind "adjustment" (InvoiceDocument).
        let kind = adjusts == nil ? InvoiceLine.Kind.usage.rawValue : "adjustment"
        for line in document.lines where line.kind == kind && line.metric == metric.name && line.adjusts == adjusts {
            guard let start = try? EventTime(parsing: line.segmentStart), let end = try? EventTime(parsing: line.segmentEnd),
                start <= record.event.timestamp, record.event.timestamp < end
            else { continue }
            let priceBy = pricing.config.plan(id: line.plan)?.usageCharge(for: metric.name)?.priceBy
            if let priceBy, line.propertyValue != (properties[priceBy] ?? "") { continue }
            lines.append(
                EventTraceReport.Line(
                    period: document.period, status: view.status.rawValue, sha256: view.sha256, description: line.description, plan: line.plan,
                    segmentStart: line.segmentStart, segmentEnd: line.segmentEnd, quantity: line.quantity, amount: line.amount,
                    currency: document.currency, adjusts: line.adjusts))
        }
        guard let first = lines.first else {
            return (
                [],
                "the \(view.status.rawValue) \(document.period) invoice has no line for '\(metric.name)' at the event's time (the plan in force does not charge it)"
            )
        }
        let where_ = first.adjusts.map { "the adjustment line for \($0)" } ?? "the line '\(first.description)'"
        return (
            lines,
            "billed on the \(view.status.rawValue) \(document.period) invoice, \(where_): \(first.quantity) units, \(first.amount) \(first.currency) for the line"
        )
    }
}

extension TraceQuery {
    /// The longest range of event times one trace may scan: about 13 months.
    public static let longestRange: Int64 = 400 * 86_400 * 1_000_000

    /// A trace query from request parameters (`GET /v1/events/trace`, `tallyctl trace`): a
    /// tenant, exactly one of `id` and `fingerprint` (32 hex digits), and the event times to
    /// search — `period` (YYYY-MM), or `from` and `to` (RFC 3339), by default the previous and
    /// the current period (every event an open invoice or the last closed one can hold).
    public static func parse(
        tenant: String?, id: String?, fingerprint: String?, period: String?, from: String?, to: String?, now: EventTime
    ) throws(BillingError) -> TraceQuery {
        guard let tenant, !tenant.isEmpty else { throw .badParameter("tenant", "tenant is required") }
        let key: Key
        switch (id.flatMap { $0.isEmpty ? nil : $0 }, fingerprint.flatMap { $0.isEmpty ? nil : $0 }) {
        case (let id?, nil): key = .id(id)
        case (nil, let text?):
            guard let fingerprint = Fingerprint(hex: text.lowercased()) else {
                throw .badParameter("fingerprint", "'\(text)' is not a fingerprint: 32 hexadecimal digits")
            }
            key = .fingerprint(fingerprint)
        case (nil, nil): throw .badParameter("id", "give the event's id or its fingerprint")
        case (.some, .some): throw .badParameter("fingerprint", "give the event's id or its fingerprint, not both")
        }
        var times: Range<EventTime>
        if let period {
            guard from == nil, to == nil else { throw .badParameter("period", "give period, or from and to, not both") }
            guard let month = BillingPeriod(period) else { throw .badParameter("period", "'\(period)' is not a period: use YYYY-MM") }
            times = month.start..<month.end
        } else {
            let current = BillingPeriod(containing: now)
            func time(_ text: String, _ name: String) throws(BillingError) -> EventTime {
                do { return try EventTime(parsing: text) } catch { throw .badParameter(name, "\(error)") }
            }
            let lower = try from.map { (text: String) throws(BillingError) in try time(text, "from") } ?? current.previous.start
            let upper = try to.map { (text: String) throws(BillingError) in try time(text, "to") } ?? current.end
            guard lower < upper else { throw .badParameter("from", "from must be before to") }
            times = lower..<upper
        }
        guard times.upperBound.microseconds - times.lowerBound.microseconds <= longestRange else {
            throw .badParameter("from", "a trace searches at most 400 days of event times; narrow from and to")
        }
        return TraceQuery(tenant: tenant, key: key, times: times)
    }
}
