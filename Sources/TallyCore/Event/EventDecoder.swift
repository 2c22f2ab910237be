#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Turns JSON into validated ``UsageEvent``s: Tally's shape, and the seed's shape
/// (`user_id` is the tenant, `units` the quantity, `endpoint` a property, the metric the
/// configured default), as one object, an array of objects, or NDJSON.
///
/// A body yields one result per event, in order, so one bad event never costs its neighbours.
public struct EventDecoder: Sendable {
    /// The metric of events that name none (always the case for the seed's shape).
    public var defaultMetric: String?
    public var limits: EventLimits

    public init(defaultMetric: String? = nil, limits: EventLimits = .standard) {
        self.defaultMetric = defaultMetric
        self.limits = limits
    }

    static let tallyFields: Set<String> = ["tenant", "metric", "quantity", "timestamp", "id", "properties"]
    static let seedFields: Set<String> = ["user_id", "endpoint", "units", "timestamp", "id", "metric", "properties"]

    /// Decodes and validates one JSON value that should be an event object.
    public func decode(_ value: JSONValue, now: EventTime) -> Result<UsageEvent, EventRejection> {
        Result { () throws(EventRejection) in
            let event = try build(value)
            try event.validate(limits: limits, now: now)
            return event
        }
    }

    /// Decodes a request body: an object, an array of objects, or NDJSON (one object per line;
    /// blank lines are skipped). A body that is not JSON at all yields a single `malformed` result.
    public func decodeBody(_ body: some Collection<UInt8>, now: EventTime) -> [Result<UsageEvent, EventRejection>] {
        let bytes = Array(body)
        return bytes.withUnsafeBufferPointer { buffer in decodeBody(buffer, now: now) }
    }

    public func decodeBody(_ buffer: UnsafeBufferPointer<UInt8>, now: EventTime) -> [Result<UsageEvent, EventRejection>] {
        decodeBody(buffer, now: now, direct: true)
    }

    /// `direct: false` takes the full path (JSON tree, then fields) for every event: the
    /// reference the direct path is tested (and fuzzed) against.
    package func decodeBody(_ buffer: UnsafeBufferPointer<UInt8>, now: EventTime, direct: Bool) -> [Result<UsageEvent, EventRejection>] {
        var first = 0
        while first < buffer.count, [0x20, 0x09, 0x0A, 0x0D].contains(buffer[first]) { first += 1 }
        if first == buffer.count { return [] }
        if buffer[first] == UInt8(ascii: "[") {
            switch Result(catching: { () throws(JSONSyntaxError) in try JSONParser.parse(buffer) }) {
            case .success(.array(let values)): return values.map { decode($0, now: now) }
            case .success: return [.failure(EventRejection(.malformed, field: nil, "expected an array of event objects"))]
            case .failure(let error): return [.failure(EventRejection(.malformed, field: nil, error.description))]
            }
        }
        var results: [Result<UsageEvent, EventRejection>] = []
        if direct, let (event, end) = DirectEventScanner.scan(buffer, from: first, defaultMetric: defaultMetric, maxProperties: limits.maxProperties)
        {
            if DirectEventScanner.onlyWhitespace(buffer, from: end) { return [validated(event, now: now)] }
            // A whole JSON value followed by more: the body is not one value, so it is NDJSON.
            forEachLine(buffer) { line in results.append(decodeLine(line, now: now)) }
            return results
        }
        // One object (perhaps spread over several lines), or NDJSON: then parse line by line so
        // that a bad line rejects only itself.
        if let single = try? JSONParser.parse(buffer) { return [decode(single, now: now)] }
        forEachLine(buffer) { line in results.append(direct ? decodeLine(line, now: now) : decodeLineFullPath(line, now: now)) }
        return results
    }

    /// Decodes one NDJSON line.
    public func decodeLine(_ line: UnsafeBufferPointer<UInt8>, now: EventTime) -> Result<UsageEvent, EventRejection> {
        if let (event, end) = DirectEventScanner.scan(line, from: 0, defaultMetric: defaultMetric, maxProperties: limits.maxProperties),
            DirectEventScanner.onlyWhitespace(line, from: end)
        {
            return validated(event, now: now)
        }
        return decodeLineFullPath(line, now: now)
    }

    /// Reads one NDJSON line into `event` when it is a valid event of the common shape (see
    /// ``PlainEvent``), with no allocation once `event`'s arrays have grown; false otherwise, and
    /// then ``decodeLine(_:now:)`` gives the outcome. Whichever way a line goes, its outcome,
    /// fingerprint and spool record are the same.
    public func scanPlain(_ line: UnsafeBufferPointer<UInt8>, now: EventTime, into event: inout PlainEvent) -> Bool {
        DirectEventScanner.scanPlain(line, limits: limits, now: now, into: &event)
    }

    /// Decodes one NDJSON line through the JSON tree: every case the direct path leaves to it.
    package func decodeLineFullPath(_ line: UnsafeBufferPointer<UInt8>, now: EventTime) -> Result<UsageEvent, EventRejection> {
        switch Result(catching: { () throws(JSONSyntaxError) in try JSONParser.parse(line) }) {
        case .success(let value): decode(value, now: now)
        case .failure(let error): .failure(EventRejection(.malformed, field: nil, error.description))
        }
    }

    private func validated(_ event: UsageEvent, now: EventTime) -> Result<UsageEvent, EventRejection> {
        do throws(EventRejection) {
            try event.validate(limits: limits, now: now)
            return .success(event)
        } catch {
            return .failure(error)
        }
    }

    private func build(_ value: JSONValue) throws(EventRejection) -> UsageEvent {
        guard case .object(let members) = value else {
            throw EventRejection(.malformed, field: nil, "an event must be a JSON object, not \(value.kind)")
        }
        var fields: [String: JSONValue] = [:]
        for member in members {
            if fields.updateValue(member.value, forKey: member.key) != nil {
                throw EventRejection(.invalidField, field: member.key, "appears more than once")
            }
        }
        let seedShape = fields["tenant"] == nil && fields["user_id"] != nil
        let allowed = seedShape ? Self.seedFields : Self.tallyFields
        for member in members where !allowed.contains(member.key) {
            let list = allowed.sorted().joined(separator: ", ")
            throw EventRejection(.unknownField, field: member.key, "is not an event field (expected \(list))")
        }
        let tenant = try string(fields, seedShape ? "user_id" : "tenant", required: true) ?? ""
        guard let metric = try string(fields, "metric", required: false) ?? defaultMetric else {
            throw EventRejection(.missingField, field: "metric", "is required (this agent has no default metric)")
        }
        let quantity = try quantity(fields, seedShape ? "units" : "quantity")
        let timestampText = try string(fields, "timestamp", required: true) ?? ""
        let timestamp: EventTime
        do {
            timestamp = try EventTime(parsing: timestampText)
        } catch {
            throw EventRejection(.invalidField, field: "timestamp", error.description)
        }
        let id = try string(fields, "id", required: false)
        var properties = Properties()
        if let raw = fields["properties"] {
            guard case .object(let pairs) = raw else {
                throw EventRejection(.invalidField, field: "properties", "must be an object, not \(raw.kind)")
            }
            if pairs.count > limits.maxProperties {
                throw EventRejection(
                    .limitExceeded, field: "properties", "\(pairs.count) properties exceed the limit of \(limits.maxProperties)")
            }
            for pair in pairs {
                let field = "properties.\(pair.key)"
                if properties[pair.key] != nil {
                    throw EventRejection(.invalidField, field: field, "appears more than once")
                }
                properties[pair.key] = try propertyText(pair.value, field: field)
            }
        }
        if seedShape, let endpoint = try string(fields, "endpoint", required: false) {
            if properties["endpoint"] != nil {
                throw EventRejection(.invalidField, field: "endpoint", "is given both as a field and as a property")
            }
            properties["endpoint"] = endpoint
        }
        return UsageEvent(
            tenant: tenant, metric: metric, quantity: quantity, timestamp: timestamp, id: id, properties: properties)
    }

    private func string(_ fields: [String: JSONValue], _ name: String, required: Bool) throws(EventRejection) -> String? {
        switch fields[name] {
        case .string(let text)?: return text
        case nil, .null?:
            if required { throw EventRejection(.missingField, field: name, "is required") }
            return nil
        case let other?: throw EventRejection(.invalidField, field: name, "must be a string, not \(other.kind)")
        }
    }

    private func quantity(_ fields: [String: JSONValue], _ name: String) throws(EventRejection) -> Quantity {
        let text: String
        switch fields[name] {
        case .number(let lexeme)?: text = lexeme
        case .string(let string)?: text = string
        case nil, .null?: throw EventRejection(.missingField, field: name, "is required")
        case let other?: throw EventRejection(.invalidField, field: name, "must be a number, not \(other.kind)")
        }
        do {
            return try Quantity(parsing: text)
        } catch .outOfRange {
            throw EventRejection(.limitExceeded, field: name, QuantityError.outOfRange(text).description)
        } catch {
            throw EventRejection(.invalidField, field: name, error.description)
        }
    }

    /// Property values are text. A JSON number becomes its canonical decimal text and a boolean
    /// `true`/`false`, so `{"status": 200}` and `{"status": "200"}` are the same property.
    private func propertyText(_ value: JSONValue, field: String) throws(EventRejection) -> String {
        switch value {
        case .string(let text): return text
        case .bool(let flag): return flag ? "true" : "false"
        case .number(let lexeme):
            guard let quantity = try? Quantity(parsing: lexeme) else {
                throw EventRejection(.invalidField, field: field, "number '\(lexeme)' cannot be kept exactly; send it as a string")
            }
            return quantity.description
        default:
            throw EventRejection(.invalidField, field: field, "must be a string, number or boolean, not \(value.kind)")
        }
    }
}

/// Calls `body` with each non-blank line of `buffer` (split on `\n`, a trailing `\r` removed).
public func forEachLine(_ buffer: UnsafeBufferPointer<UInt8>, _ body: (UnsafeBufferPointer<UInt8>) -> Void) {
    eachLine(buffer) { line in
        body(line)
        return true
    }
}

/// The first line ``forEachLine(_:_:)`` would give, without reading further; nil when none.
public func firstLine(_ buffer: UnsafeBufferPointer<UInt8>) -> UnsafeBufferPointer<UInt8>? {
    var first: UnsafeBufferPointer<UInt8>?
    eachLine(buffer) { line in
        first = line
        return false
    }
    return first
}

/// The non-blank lines of `buffer` in order, until `body` returns false.
private func eachLine(_ buffer: UnsafeBufferPointer<UInt8>, _ body: (UnsafeBufferPointer<UInt8>) -> Bool) {
    var start = 0
    var index = 0
    // Whether to go on after the line that ends at `end`.
    func emit(_ end: Int) -> Bool {
        var last = end
        if last > start, buffer[last - 1] == 0x0D { last -= 1 }
        let line = UnsafeBufferPointer(rebasing: buffer[start..<last])
        return line.contains(where: { $0 != 0x20 && $0 != 0x09 }) ? body(line) : true
    }
    // The next newline by memchr(3), which looks at many bytes an instruction: a byte loop was
    // a twentieth of the agent's time on a stream of events (`perf` of `tally-bench agent`).
    guard let base = buffer.baseAddress else { return }
    while index < buffer.count, let found = memchr(base + index, 0x0A, buffer.count - index) {
        let newline = base.distance(to: found.assumingMemoryBound(to: UInt8.self))
        guard emit(newline) else { return }
        start = newline + 1
        index = start
    }
    if start < buffer.count { _ = emit(buffer.count) }
}
