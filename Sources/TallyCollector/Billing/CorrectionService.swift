public import TallyCore
public import TallyLedger
import TallyPricing

/// A correction as an admin asks for it (`POST /v1/corrections`, `tallyctl correct`): void or
/// amend one event, or every event a filter selects, with a reason and an idempotency key;
/// optionally a dry run that shows what would change and writes nothing.
public struct CorrectionOrder: Sendable, Hashable {
    /// Which events: one, as a trace finds it (it must find exactly one stored event), or every
    /// stored event of a tenant matching a filter.
    public enum Target: Sendable, Hashable {
        case event(TraceQuery)
        case filter(CorrectionSelection)
    }

    public var key: String
    public var reason: String
    public var action: CorrectionRequest.Action
    public var target: Target
    public var dryRun: Bool

    public init(key: String, reason: String, action: CorrectionRequest.Action, target: Target, dryRun: Bool) {
        self.key = key
        self.reason = reason
        self.action = action
        self.target = target
        self.dryRun = dryRun
    }

    /// The most events one order may correct.
    public static let maximumEvents = 10_000
}

/// The stored events of one tenant that a bulk correction selects: in a range of event times,
/// of one metric when given, whose properties include every given (name, value).
public struct CorrectionSelection: Sendable, Hashable {
    public var tenant: String
    public var metric: String?
    public var times: Range<EventTime>
    public var properties: [String: String]

    public init(tenant: String, metric: String?, times: Range<EventTime>, properties: [String: String]) {
        self.tenant = tenant
        self.metric = metric
        self.times = times
        self.properties = properties
    }

    func matches(_ record: LedgerRecord) -> Bool {
        guard record.status == .accepted || record.status == .adjusted, times.contains(record.event.timestamp) else { return false }
        if let metric, record.event.metric != metric { return false }
        return properties.allSatisfy { record.event.properties[$0.key] == $0.value }
    }
}

/// The answer to a correction order: each correction (as applied, or as it would be), and the
/// quantity each metric's usage changes by.
public struct CorrectionAnswer: Codable, Sendable, Hashable {
    public struct Correction: Codable, Sendable, Hashable {
        public var key: String
        public var tenant: String
        public var metric: String
        public var timestamp: String
        public var fingerprint: String
        public var action: String
        public var quantityBefore: String
        public var quantityAfter: String?
        public var propertiesBefore: [String: String]
        public var propertiesAfter: [String: String]?
        /// The event's own period.
        public var period: String
        /// The open period whose invoice bills the difference as an adjustment; absent when the
        /// event's own period is open (its draft invoice changes).
        public var billedIn: String?
        public var reason: String
        public var actor: String
        public var createdAt: String
        /// True when this key had been applied before (the stored record is returned).
        public var alreadyApplied: Bool
    }

    public struct Delta: Codable, Sendable, Hashable {
        public var metric: String
        public var quantity: String
    }

    public var dryRun: Bool
    public var matched: Int
    public var applied: Int
    public var corrections: [Correction]
    public var deltas: [Delta]
}

extension CorrectionAnswer.Correction {
    init(_ record: CorrectionRecord, alreadyApplied: Bool) {
        func dictionary(_ properties: Properties) -> [String: String] {
            Dictionary(properties.map { ($0.key, $0.value) }, uniquingKeysWith: { _, last in last })
        }
        self.init(
            key: record.key, tenant: record.tenant, metric: record.metric, timestamp: record.timestamp.description,
            fingerprint: record.fingerprint.description, action: record.action, quantityBefore: record.quantityBefore.description,
            quantityAfter: record.quantityAfter?.description, propertiesBefore: dictionary(record.propertiesBefore),
            propertiesAfter: record.propertiesAfter.map(dictionary), period: record.period.description,
            billedIn: record.billedIn?.description, reason: record.reason, actor: record.actor, createdAt: record.createdAt.description,
            alreadyApplied: alreadyApplied)
    }
}

extension Invoicing {
    /// Applies (or, for a dry run, plans) a correction order on behalf of `actor`.
    public func correct(_ order: CorrectionOrder, actor: String) async throws(BillingError) -> CorrectionAnswer {
        let now = clock()
        let window = lateWindow
        let events = try await correctedEvents(order.target)
        if let pricing {
            for metric in Set(events.map(\.event.metric)).sorted() {
                if let definition = pricing.config.metric(named: metric), !definition.aggregation.isAdditive || definition.aggregation.isLevel {
                    throw .badParameter(
                        "action",
                        "the metric '\(metric)' aggregates by \(definition.aggregation): a correction can take an event out of a sum or a count only")
                }
            }
        }
        let requests = events.map { record in
            let key: String =
                switch order.target {
                case .event: order.key
                case .filter: "\(order.key)/\(record.fingerprint)"
                }
            return CorrectionRequest(
                key: key, tenant: record.event.tenant, timestamp: record.event.timestamp, fingerprint: record.fingerprint,
                action: order.action, reason: order.reason, actor: actor)
        }
        let planned: [(record: CorrectionRecord, stored: Bool)] = try await onLedger(readOnly: order.dryRun) { store throws(BillingError) in
            do throws(LedgerError) {
                if !order.dryRun {
                    var before = Set<String>()
                    for request in requests {
                        let earlier = try store.corrections(
                            CorrectionFilter(event: RawKey(timestamp: request.timestamp, fingerprint: request.fingerprint)))
                        before.formUnion(earlier.map(\.key))
                    }
                    return try store.applyCorrections(requests, now: now).map { ($0, before.contains($0.key)) }
                }
                var result: [(record: CorrectionRecord, stored: Bool)] = []
                for (request, event) in zip(requests, events) {
                    let earlier = try store.corrections(
                        CorrectionFilter(event: RawKey(timestamp: request.timestamp, fingerprint: request.fingerprint)))
                    if let stored = earlier.first(where: { $0.key == request.key }) {
                        try CorrectionRules.requireSame(request, stored)
                        result.append((stored, true))
                        continue
                    }
                    let plan = try CorrectionRules.plan(
                        request, event: event, earlier: earlier, window: window, now: now,
                        groupBy: store.configuration.groupBy(of: event.event.metric),
                        uniqueCountMetrics: Set(store.configuration.uniqueCounts.map(\.metric)),
                        keepsMinimum: store.configuration.keepsMinimum(event.event.metric))
                    result.append((plan.record, false))
                }
                return result
            } catch {
                if case .correctionRefused(let why) = error { throw BillingError.badParameter("correction", why) }
                throw .ledger(error)
            }
        }
        var deltas: [String: Quantity] = [:]
        for (record, stored) in planned where !stored {
            do {
                deltas[record.metric] = try (deltas[record.metric] ?? .zero).adding(try record.quantityDelta())
            } catch {
                throw .ledger(.quantityOverflow("the corrections' total"))
            }
        }
        return CorrectionAnswer(
            dryRun: order.dryRun, matched: events.count, applied: order.dryRun ? 0 : planned.filter { !$0.stored }.count,
            corrections: planned.map { CorrectionAnswer.Correction($0.record, alreadyApplied: $0.stored) },
            deltas: deltas.sorted { $0.key < $1.key }.map { CorrectionAnswer.Delta(metric: $0.key, quantity: $0.value.description) })
    }

    /// The stored events an order names: exactly one for an event, every match for a filter.
    func correctedEvents(_ target: CorrectionOrder.Target) async throws(BillingError) -> [LedgerRecord] {
        try await onLedger(readOnly: true) { store throws(BillingError) in
            let found: [LedgerRecord]
            do throws(LedgerError) {
                switch target {
                case .event(let query): found = try store.traceRecords(query).events
                case .filter(let selection):
                    var events: [LedgerRecord] = []
                    var period = BillingPeriod(containing: selection.times.lowerBound)
                    while period.start < selection.times.upperBound {
                        try store.scanRawEvents(tenant: selection.tenant, period: period) { (record: LedgerRecord) throws(LedgerError) in
                            guard selection.matches(record) else { return }
                            events.append(record)
                            if events.count > CorrectionOrder.maximumEvents {
                                throw .correctionRefused(
                                    "the filter selects more than \(CorrectionOrder.maximumEvents) events: narrow it (time range, metric, properties)"
                                )
                            }
                        }
                        period = period.next
                    }
                    found = events
                }
            } catch {
                if case .correctionRefused(let why) = error { throw BillingError.badParameter("filter", why) }
                throw .ledger(error)
            }
            guard case .event(let query) = target else { return found }
            guard found.count == 1 else {
                if found.isEmpty {
                    throw BillingError.badParameter(
                        "event",
                        "tenant '\(query.tenant)' has no stored event with that id or fingerprint in [\(query.times.lowerBound), \(query.times.upperBound))"
                    )
                }
                let listed = found.map { "\($0.event.metric) at \($0.event.timestamp): \($0.fingerprint)" }.joined(separator: "; ")
                throw BillingError.badParameter("event", "\(found.count) stored events have that id (\(listed)): give the fingerprint")
            }
            return found
        }
    }

    /// The corrections of a tenant's events in `period` (by event time) and those billed in it.
    public func corrections(tenant: String, period: BillingPeriod) async throws(BillingError) -> [CorrectionRecord] {
        try await onLedger(readOnly: true) { store throws(BillingError) in
            do throws(LedgerError) {
                return try store.corrections(CorrectionFilter(tenant: tenant)).filter {
                    $0.billedIn == period || ($0.billedIn == nil && $0.period == period)
                }
            } catch {
                throw .ledger(error)
            }
        }
    }
}

extension CorrectionOrder {
    /// An order from the JSON body of `POST /v1/corrections` (`protocol/openapi.yaml`): every
    /// field checked, unknown fields refused, quantities exact (never through a binary float).
    public static func parse(_ body: [UInt8], now: EventTime) throws(BillingError) -> CorrectionOrder {
        let value: JSONValue
        do { value = try JSONParser.parse(body) } catch { throw .badParameter("body", "\(error)") }
        guard case .object(let members) = value else { throw .badParameter("body", "the body must be a JSON object") }
        let known: Set<String> = [
            "key", "reason", "action", "quantity", "properties", "tenant", "id", "fingerprint", "period", "from", "to", "filter", "dryRun",
        ]
        var fields: [String: JSONValue] = [:]
        for (name, member) in members {
            guard known.contains(name) else { throw .badParameter(name, "unknown field '\(name)'") }
            guard fields[name] == nil else { throw .badParameter(name, "'\(name)' is given twice") }
            fields[name] = member
        }
        func string(_ name: String, required: Bool = false) throws(BillingError) -> String? {
            switch fields[name] {
            case nil, .null?:
                if required { throw .badParameter(name, "'\(name)' is required") }
                return nil
            case .string(let text)?: return text
            case let other?: throw .badParameter(name, "'\(name)' must be a string, not \(other.kind)")
            }
        }
        func properties(_ value: JSONValue?, _ name: String) throws(BillingError) -> [(String, String)]? {
            switch value {
            case nil, .null?: return nil
            case .object(let pairs)?:
                var result: [(String, String)] = []
                for (key, member) in pairs {
                    guard case .string(let text) = member else { throw .badParameter(name, "property '\(key)' must be a string") }
                    result.append((key, text))
                }
                return result
            case let other?: throw .badParameter(name, "'\(name)' must be an object of strings, not \(other.kind)")
            }
        }
        guard let key = try string("key", required: true), !key.isEmpty, key.utf8.count <= 160 else {
            throw .badParameter("key", "'key' (the correction's idempotency key) must have 1 to 160 bytes")
        }
        guard let reason = try string("reason", required: true), !reason.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
            throw .badParameter("reason", "'reason' must say why, in words")
        }
        let action: CorrectionRequest.Action
        switch try string("action", required: true) {
        case "void":
            guard fields["quantity"] == nil, fields["properties"] == nil else {
                throw .badParameter("action", "a void takes no quantity or properties")
            }
            action = .void
        case "amend":
            var quantity: Quantity?
            switch fields["quantity"] {
            case nil, .null?: quantity = nil
            case .number(let text)?, .string(let text)?:
                guard let parsed = try? Quantity(parsing: text), parsed >= .zero else {
                    throw .badParameter("quantity", "'\(text)' is not an exact decimal quantity of 0 or more")
                }
                quantity = parsed
            case let other?: throw .badParameter("quantity", "'quantity' must be a number or a decimal string, not \(other.kind)")
            }
            let newProperties = try properties(fields["properties"], "properties").map { Properties($0) }
            guard quantity != nil || newProperties != nil else {
                throw .badParameter("action", "an amendment needs a new quantity or new properties")
            }
            action = .amend(quantity: quantity, properties: newProperties)
        case let other: throw .badParameter("action", "'action' must be void or amend, not '\(other ?? "")'")
        }
        let tenant = try string("tenant", required: true)
        let dryRun: Bool
        switch fields["dryRun"] {
        case nil, .null?: dryRun = false
        case .bool(let flag)?: dryRun = flag
        case let other?: throw .badParameter("dryRun", "'dryRun' must be true or false, not \(other.kind)")
        }
        let target: Target
        if let filter = fields["filter"] {
            guard fields["id"] == nil, fields["fingerprint"] == nil, fields["period"] == nil, fields["from"] == nil, fields["to"] == nil else {
                throw .badParameter("filter", "give one event (id or fingerprint) or a filter, not both")
            }
            guard case .object(let pairs) = filter else { throw .badParameter("filter", "'filter' must be an object") }
            var metric: String?
            var from: EventTime?
            var to: EventTime?
            var match: [String: String] = [:]
            for (name, member) in pairs {
                switch (name, member) {
                case ("metric", .string(let text)): metric = text
                case ("from", .string(let text)), ("to", .string(let text)):
                    let time: EventTime
                    do { time = try EventTime(parsing: text) } catch { throw .badParameter("filter", "filter.\(name): \(error)") }
                    if name == "from" { from = time } else { to = time }
                case ("properties", _):
                    for (property, value) in try properties(member, "filter") ?? [] { match[property] = value }
                default: throw .badParameter("filter", "filter.\(name) is not a string field of a filter (metric, from, to, properties)")
                }
            }
            guard let from, let to, from < to else { throw .badParameter("filter", "a filter needs from and to (RFC 3339), from before to") }
            guard to.microseconds - from.microseconds <= TraceQuery.longestRange else {
                throw .badParameter("filter", "a filter covers at most 400 days of event times")
            }
            target = .filter(CorrectionSelection(tenant: tenant ?? "", metric: metric, times: from..<to, properties: match))
        } else {
            target = .event(
                try TraceQuery.parse(
                    tenant: tenant, id: try string("id"), fingerprint: try string("fingerprint"), period: try string("period"),
                    from: try string("from"), to: try string("to"), now: now))
        }
        return CorrectionOrder(key: key, reason: reason, action: action, target: target, dryRun: dryRun)
    }
}
