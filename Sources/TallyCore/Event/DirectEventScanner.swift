/// Reads the plain shape of an event object straight from its UTF-8 bytes, in one pass, without
/// building a ``JSONValue`` tree or a dictionary of fields: the agent's hot path.
///
/// Guarantee: it either returns exactly the ``UsageEvent`` that ``JSONParser`` followed by
/// ``EventDecoder``'s field mapping would build from the same bytes (not yet validated), or nil.
/// It returns nil for everything but the plain, valid case — an escape in a string, `null`, a
/// repeated, unknown or missing field, a value of the wrong type, a quantity or timestamp that
/// does not parse, any JSON error — and the caller then takes the full path, which gives the
/// exact outcome and message. So every input decodes to the same result with or without it.
struct DirectEventScanner {
    private let bytes: UnsafeBufferPointer<UInt8>
    private var index: Int

    private init(_ bytes: UnsafeBufferPointer<UInt8>, from start: Int) {
        self.bytes = bytes
        self.index = start
    }

    /// The event object starting at `start` (after optional whitespace) and the index just after
    /// its closing brace; nil when the full path must decide.
    static func scan(
        _ bytes: UnsafeBufferPointer<UInt8>, from start: Int, defaultMetric: String?, maxProperties: Int
    ) -> (event: UsageEvent, end: Int)? {
        var scanner = DirectEventScanner(bytes, from: start)
        guard let event = scanner.event(defaultMetric: defaultMetric, maxProperties: maxProperties) else { return nil }
        return (event, scanner.index)
    }

    /// True when only JSON whitespace follows `start`.
    static func onlyWhitespace(_ bytes: UnsafeBufferPointer<UInt8>, from start: Int) -> Bool {
        var scanner = DirectEventScanner(bytes, from: start)
        scanner.skipWhitespace()
        return scanner.index == bytes.count
    }

    // Field bits, for presence.
    private static let tenantBit: UInt16 = 1 << 0
    private static let metricBit: UInt16 = 1 << 1
    private static let quantityBit: UInt16 = 1 << 2
    private static let timestampBit: UInt16 = 1 << 3
    private static let idBit: UInt16 = 1 << 4
    private static let propertiesBit: UInt16 = 1 << 5
    private static let userIdBit: UInt16 = 1 << 6
    private static let endpointBit: UInt16 = 1 << 7
    private static let unitsBit: UInt16 = 1 << 8

    /// The members of an event object as byte ranges of the line, each field at most once;
    /// `properties` gets the `properties` members in their order.
    private struct Fields {
        var seen: UInt16 = 0
        var tenant: Range<Int>?
        var userId: Range<Int>?
        var metric: Range<Int>?
        var quantity: Range<Int>?
        var units: Range<Int>?
        var timestamp: EventTime?
        var id: Range<Int>?
        var endpoint: Range<Int>?

        /// Stores the value of the field `bit` (any but the timestamp and the properties).
        mutating func set(_ bit: UInt16, _ range: Range<Int>) {
            switch bit {
            case DirectEventScanner.tenantBit: tenant = range
            case DirectEventScanner.userIdBit: userId = range
            case DirectEventScanner.metricBit: metric = range
            case DirectEventScanner.idBit: id = range
            case DirectEventScanner.endpointBit: endpoint = range
            case DirectEventScanner.quantityBit: quantity = range
            default: units = range
            }
        }

        /// The shape: the seed's when there is a `user_id` and no `tenant`.
        var seedShape: Bool { seen & DirectEventScanner.tenantBit == 0 && seen & DirectEventScanner.userIdBit != 0 }
    }

    /// One member of `properties`: its key's bytes (between the quotes) and its value.
    struct PropertyMember {
        var key: Range<Int>
        var value: Value

        enum Value {
            /// A plain string's bytes, between the quotes.
            case string(Range<Int>)
            /// A JSON number's lexeme.
            case number(Range<Int>)
            /// `true` or `false`: the literal's bytes, which are also the value's text.
            case literal(Range<Int>)
        }
    }

    /// Reads the object's members into `fields` and `properties` (emptied first); false when
    /// the full path must decide. Strings are plain (no escape, no control byte), their UTF-8
    /// not yet checked; the timestamp is parsed; quantities are only delimited.
    private mutating func members(_ fields: inout Fields, _ properties: inout [PropertyMember], maxProperties: Int) -> Bool {
        properties.removeAll(keepingCapacity: true)
        skipWhitespace()
        guard index < bytes.count, bytes[index] == UInt8(ascii: "{") else { return false }
        index += 1
        while true {
            skipWhitespace()
            guard let key = plainString() else { return false }
            skipWhitespace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { return false }
            index += 1
            skipWhitespace()
            guard let bit = Self.fieldBit(key, in: bytes), fields.seen & bit == 0 else { return false }
            fields.seen |= bit
            switch bit {
            case Self.timestampBit:
                // RFC 3339 is ASCII; the full path refuses other bytes (as JSON or as a time).
                guard let range = plainString(), !bytes[range].contains(where: { $0 >= 0x80 }),
                    let time = try? EventTime(parsingUTF8: UnsafeBufferPointer(rebasing: bytes[range]))
                else { return false }
                fields.timestamp = time
            case Self.propertiesBit:
                guard propertiesValue(&properties, maxProperties: maxProperties) else { return false }
            case Self.quantityBit, Self.unitsBit:
                guard let range = quantityValue() else { return false }
                fields.set(bit, range)
            default:
                guard let range = plainString() else { return false }
                fields.set(bit, range)
            }
            guard let another = afterMember() else { return false }
            if !another { break }
        }
        let foreign = fields.seedShape ? Self.quantityBit : (Self.userIdBit | Self.endpointBit | Self.unitsBit)
        return fields.seen & foreign == 0
    }

    private mutating func event(defaultMetric: String?, maxProperties: Int) -> UsageEvent? {
        var fields = Fields()
        var members: [PropertyMember] = []
        guard self.members(&fields, &members, maxProperties: maxProperties) else { return nil }
        func text(_ range: Range<Int>?) -> String? { range.flatMap { Self.text(UnsafeBufferPointer(rebasing: bytes[$0])) } }
        var properties = Properties()
        for member in members {
            guard let key = text(member.key) else { return nil }
            let value: String
            switch member.value {
            case .string(let range), .literal(let range):
                guard let string = text(range) else { return nil }
                value = string
            case .number(let range):
                guard let quantity = try? Quantity(parsingUTF8: UnsafeBufferPointer(rebasing: bytes[range])) else { return nil }
                value = quantity.description
            }
            guard properties[key] == nil else { return nil }
            properties[key] = value
        }
        let seedShape = fields.seedShape
        var id: String?
        if fields.id != nil {
            guard let text = text(fields.id) else { return nil }
            id = text
        }
        guard let owner = text(seedShape ? fields.userId : fields.tenant),
            let name = fields.metric == nil ? defaultMetric : text(fields.metric),
            let amountRange = seedShape ? fields.units : fields.quantity, let timestamp = fields.timestamp,
            let quantity = try? Quantity(parsingUTF8: UnsafeBufferPointer(rebasing: bytes[amountRange]))
        else { return nil }
        if seedShape, fields.endpoint != nil {
            guard let endpoint = text(fields.endpoint), properties["endpoint"] == nil else { return nil }
            properties["endpoint"] = endpoint
        }
        return UsageEvent(tenant: owner, metric: name, quantity: quantity, timestamp: timestamp, id: id, properties: properties)
    }

    /// The event at the start of `line` (after optional whitespace, with only whitespace after
    /// it) as a ``PlainEvent``, valid under `limits` at `now`; false for everything else, which
    /// the caller decodes through ``EventDecoder/decodeLine(_:now:)``. Only the common shape
    /// takes this path: Tally's fields, a metric given, every string ASCII, property values
    /// strings or booleans. It answers exactly as that path would for the same line (tested).
    static func scanPlain(
        _ line: UnsafeBufferPointer<UInt8>, limits: EventLimits, now: EventTime, into event: inout PlainEvent
    ) -> Bool {
        var scanner = DirectEventScanner(line, from: 0)
        var fields = Fields()
        var members: [PropertyMember] = []
        swap(&members, &event.scratch)
        defer { swap(&members, &event.scratch) }
        guard scanner.members(&fields, &members, maxProperties: limits.maxProperties),
            onlyWhitespace(line, from: scanner.index), !fields.seedShape,
            let tenant = fields.tenant, let metric = fields.metric, let amount = fields.quantity, let timestamp = fields.timestamp,
            let quantity = try? Quantity(parsingUTF8: UnsafeBufferPointer(rebasing: line[amount]))
        else { return false }
        // Text: non-empty, within its limit, ASCII and no DEL (control bytes below 0x20 are not
        // plain); names as `UsageEvent.checkName` wants them.
        func isText(_ range: Range<Int>, max: Int) -> Bool {
            !range.isEmpty && range.count <= max && !line[range].contains(where: { $0 >= 0x7F })
        }
        func isName(_ range: Range<Int>, max: Int) -> Bool {
            guard !range.isEmpty, range.count <= max else { return false }
            var first = true
            for byte in line[range] {
                guard UsageEvent.isNameByte(byte, first: first) else { return false }
                first = false
            }
            return true
        }
        guard isText(tenant, max: limits.maxTenantBytes), isName(metric, max: limits.maxMetricBytes),
            fields.id.map({ isText($0, max: limits.maxIdBytes) }) ?? true,
            quantity.nanos >= 0, quantity <= limits.maxQuantity, members.count <= limits.maxProperties,
            EventTime.acceptedRange.contains(timestamp), EventRejection.future(timestamp, now: now, skew: limits.maxFutureSkew) == nil
        else { return false }
        event.properties.removeAll(keepingCapacity: true)
        for member in members {
            guard isName(member.key, max: limits.maxPropertyKeyBytes) else { return false }
            switch member.value {
            case .string(let value):
                // An empty value is allowed (only keys are names).
                guard value.count <= limits.maxPropertyValueBytes, !line[value].contains(where: { $0 >= 0x7F }) else { return false }
                event.properties.append((member.key, value))
            case .literal(let value): event.properties.append((member.key, value))
            case .number: return false
            }
        }
        // Sorted by the key's bytes, each key once (an insertion sort: a handful of keys).
        var sorted = 1
        while sorted < event.properties.count {
            let item = event.properties[sorted]
            var position = sorted
            while position > 0 {
                let before = event.properties[position - 1].key
                if line[item.key].elementsEqual(line[before]) { return false }
                guard line[item.key].lexicographicallyPrecedes(line[before]) else { break }
                event.properties[position] = event.properties[position - 1]
                position -= 1
            }
            event.properties[position] = item
            sorted += 1
        }
        event.tenant = tenant
        event.metric = metric
        event.id = fields.id
        event.timestamp = timestamp
        event.quantity = quantity
        return true
    }

    /// The field bit of an event key (its bytes at `key`), or nil for any other key.
    private static func fieldBit(_ key: Range<Int>, in bytes: UnsafeBufferPointer<UInt8>) -> UInt16? {
        func matches(_ literal: StaticString) -> Bool {
            guard literal.utf8CodeUnitCount == key.count else { return false }
            let start = literal.utf8Start
            for offset in 0..<key.count where bytes[key.lowerBound + offset] != start[offset] { return false }
            return true
        }
        guard let first = key.isEmpty ? nil : bytes[key.lowerBound] else { return nil }
        switch first {
        case UInt8(ascii: "t"):
            if matches("tenant") { return tenantBit }
            if matches("timestamp") { return timestampBit }
        case UInt8(ascii: "m"): if matches("metric") { return metricBit }
        case UInt8(ascii: "q"): if matches("quantity") { return quantityBit }
        case UInt8(ascii: "i"): if matches("id") { return idBit }
        case UInt8(ascii: "p"): if matches("properties") { return propertiesBit }
        case UInt8(ascii: "u"):
            if matches("user_id") { return userIdBit }
            if matches("units") { return unitsBit }
        case UInt8(ascii: "e"): if matches("endpoint") { return endpointBit }
        default: break
        }
        return nil
    }

    private mutating func skipWhitespace() {
        while index < bytes.count {
            switch bytes[index] {
            case 0x20, 0x09, 0x0A, 0x0D: index += 1
            default: return
            }
        }
    }

    /// The bytes between the quotes of a string with no escapes and no control characters (its
    /// UTF-8 not yet checked); nil for anything else.
    private mutating func plainString() -> Range<Int>? {
        guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { return nil }
        let start = index + 1
        var cursor = start
        while cursor < bytes.count {
            let c = bytes[cursor]
            if c == UInt8(ascii: "\"") {
                index = cursor + 1
                return start..<cursor
            }
            if c == UInt8(ascii: "\\") || c < 0x20 { return nil }
            cursor += 1
        }
        return nil
    }

    /// The text of UTF-8 bytes, or nil when they are not valid UTF-8.
    static func text(_ bytes: UnsafeBufferPointer<UInt8>) -> String? { UTF8Text.decode(bytes) }

    /// A quantity: a JSON number's lexeme or a plain string's bytes (both parsed by ``Quantity``).
    private mutating func quantityValue() -> Range<Int>? {
        guard index < bytes.count else { return nil }
        if bytes[index] == UInt8(ascii: "\"") {
            // The full path parses the string's text; for a plain ASCII string that is the bytes.
            guard let range = plainString(), Self.text(UnsafeBufferPointer(rebasing: bytes[range])) != nil
            else { return nil }
            return range
        }
        return number()
    }

    /// A JSON number (RFC 8259 grammar, as ``JSONParser`` reads it).
    private mutating func number() -> Range<Int>? {
        let start = index
        var cursor = index
        func digits() -> Int {
            let first = cursor
            while cursor < bytes.count, bytes[cursor] >= 0x30, bytes[cursor] <= 0x39 { cursor += 1 }
            return cursor - first
        }
        if cursor < bytes.count, bytes[cursor] == UInt8(ascii: "-") { cursor += 1 }
        let integerStart = cursor
        let integerDigits = digits()
        guard integerDigits > 0, integerDigits == 1 || bytes[integerStart] != UInt8(ascii: "0") else { return nil }
        if cursor < bytes.count, bytes[cursor] == UInt8(ascii: ".") {
            cursor += 1
            guard digits() > 0 else { return nil }
        }
        if cursor < bytes.count, bytes[cursor] == UInt8(ascii: "e") || bytes[cursor] == UInt8(ascii: "E") {
            cursor += 1
            if cursor < bytes.count, bytes[cursor] == UInt8(ascii: "+") || bytes[cursor] == UInt8(ascii: "-") { cursor += 1 }
            guard digits() > 0 else { return nil }
        }
        index = cursor
        return start..<cursor
    }

    /// The `properties` object: plain string keys; values plain strings, numbers or booleans;
    /// at most `maxProperties` members (repeated keys are found by the caller).
    private mutating func propertiesValue(_ properties: inout [PropertyMember], maxProperties: Int) -> Bool {
        guard index < bytes.count, bytes[index] == UInt8(ascii: "{") else { return false }
        index += 1
        skipWhitespace()
        if index < bytes.count, bytes[index] == UInt8(ascii: "}") {
            index += 1
            return true
        }
        while true {
            skipWhitespace()
            guard let key = plainString() else { return false }
            skipWhitespace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { return false }
            index += 1
            skipWhitespace()
            guard index < bytes.count else { return false }
            let value: PropertyMember.Value
            let start = index
            switch bytes[index] {
            case UInt8(ascii: "\""):
                guard let range = plainString() else { return false }
                value = .string(range)
            case UInt8(ascii: "t"):
                guard literal("true") else { return false }
                value = .literal(start..<index)
            case UInt8(ascii: "f"):
                guard literal("false") else { return false }
                value = .literal(start..<index)
            default:
                guard let range = number() else { return false }
                value = .number(range)
            }
            guard properties.count < maxProperties else { return false }
            properties.append(PropertyMember(key: key, value: value))
            guard let another = afterMember() else { return false }
            if !another { return true }
        }
    }

    /// Consumes what follows an object member: true after a comma (another member follows),
    /// false after the closing brace, nil for anything else.
    private mutating func afterMember() -> Bool? {
        skipWhitespace()
        guard index < bytes.count else { return nil }
        switch bytes[index] {
        case UInt8(ascii: ","):
            index += 1
            return true
        case UInt8(ascii: "}"):
            index += 1
            return false
        default:
            return nil
        }
    }

    private mutating func literal(_ word: StaticString) -> Bool {
        let count = word.utf8CodeUnitCount
        guard index + count <= bytes.count else { return false }
        for offset in 0..<count where bytes[index + offset] != word.utf8Start[offset] { return false }
        index += count
        return true
    }
}

/// A valid event as byte ranges of the NDJSON line it was read from, with no `String` per field:
/// what the agent fingerprints and spools on its hot path (``EventDecoder/scanPlain(_:now:into:)``).
/// Its fingerprint and spool record are those of the ``UsageEvent`` the same line decodes to.
/// One value is reused line after line (its arrays keep their capacity); the ranges mean
/// something only with the line they were read from.
public struct PlainEvent: Sendable {
    public internal(set) var tenant: Range<Int> = 0..<0
    public internal(set) var metric: Range<Int> = 0..<0
    public internal(set) var id: Range<Int>?
    public internal(set) var timestamp = EventTime(microseconds: 0)
    public internal(set) var quantity = Quantity.zero
    /// Key and value bytes, sorted by the key's bytes, each key once.
    public internal(set) var properties: [(key: Range<Int>, value: Range<Int>)] = []
    /// The scanner's members, kept for their capacity.
    var scratch: [DirectEventScanner.PropertyMember] = []

    public init() {}
}
