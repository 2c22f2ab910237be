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

    private mutating func event(defaultMetric: String?, maxProperties: Int) -> UsageEvent? {
        skipWhitespace()
        guard index < bytes.count, bytes[index] == UInt8(ascii: "{") else { return nil }
        index += 1
        var seen: UInt16 = 0
        var tenant: String?
        var userId: String?
        var metric: String?
        var quantityText: Range<Int>?
        var unitsText: Range<Int>?
        var timestamp: EventTime?
        var id: String?
        var endpoint: String?
        var properties = Properties()
        while true {
            skipWhitespace()
            guard let key = plainString() else { return nil }
            skipWhitespace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { return nil }
            index += 1
            skipWhitespace()
            guard let bit = Self.fieldBit(key, in: bytes), seen & bit == 0 else { return nil }
            seen |= bit
            switch bit {
            case Self.tenantBit:
                guard let text = stringValue() else { return nil }
                tenant = text
            case Self.userIdBit:
                guard let text = stringValue() else { return nil }
                userId = text
            case Self.metricBit:
                guard let text = stringValue() else { return nil }
                metric = text
            case Self.idBit:
                guard let text = stringValue() else { return nil }
                id = text
            case Self.endpointBit:
                guard let text = stringValue() else { return nil }
                endpoint = text
            case Self.quantityBit:
                guard let range = quantityValue() else { return nil }
                quantityText = range
            case Self.unitsBit:
                guard let range = quantityValue() else { return nil }
                unitsText = range
            case Self.timestampBit:
                // RFC 3339 is ASCII; the full path refuses other bytes (as JSON or as a time).
                guard let range = plainString(), !bytes[range].contains(where: { $0 >= 0x80 }),
                    let time = try? EventTime(parsingUTF8: UnsafeBufferPointer(rebasing: bytes[range]))
                else { return nil }
                timestamp = time
            default:
                guard let pairs = propertiesValue(maxProperties: maxProperties) else { return nil }
                properties = pairs
            }
            guard let another = afterMember() else { return nil }
            if another { continue }
            break
        }
        // The shape: the seed's when there is a `user_id` and no `tenant`.
        let seedShape = seen & Self.tenantBit == 0 && seen & Self.userIdBit != 0
        let foreign = seedShape ? Self.quantityBit : (Self.userIdBit | Self.endpointBit | Self.unitsBit)
        guard seen & foreign == 0 else { return nil }
        guard let owner = seedShape ? userId : tenant, let name = metric ?? defaultMetric,
            let amountRange = seedShape ? unitsText : quantityText, let timestamp,
            let quantity = try? Quantity(parsingUTF8: UnsafeBufferPointer(rebasing: bytes[amountRange]))
        else { return nil }
        if seedShape, let endpoint {
            guard properties["endpoint"] == nil else { return nil }
            properties["endpoint"] = endpoint
        }
        return UsageEvent(tenant: owner, metric: name, quantity: quantity, timestamp: timestamp, id: id, properties: properties)
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

    /// A plain string value as text (valid UTF-8).
    private mutating func stringValue() -> String? {
        guard let range = plainString() else { return nil }
        return Self.text(UnsafeBufferPointer(rebasing: bytes[range]))
    }

    /// The text of UTF-8 bytes, or nil when they are not valid UTF-8. ASCII, the common case,
    /// skips the generic validation (whose metadata lookups showed up in profiles).
    static func text(_ bytes: UnsafeBufferPointer<UInt8>) -> String? {
        var ascii = true
        for byte in bytes where byte >= 0x80 {
            ascii = false
            break
        }
        return ascii ? String(decoding: bytes, as: UTF8.self) : String(validating: bytes, as: UTF8.self)
    }

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

    /// The `properties` object: plain string keys, each once; values plain strings, numbers kept
    /// exactly (as their canonical decimal text) or booleans; at most `maxProperties` of them.
    private mutating func propertiesValue(maxProperties: Int) -> Properties? {
        guard index < bytes.count, bytes[index] == UInt8(ascii: "{") else { return nil }
        index += 1
        var properties = Properties()
        skipWhitespace()
        if index < bytes.count, bytes[index] == UInt8(ascii: "}") {
            index += 1
            return properties
        }
        var count = 0
        while true {
            skipWhitespace()
            guard let key = stringValue() else { return nil }
            skipWhitespace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { return nil }
            index += 1
            skipWhitespace()
            guard index < bytes.count else { return nil }
            let value: String
            switch bytes[index] {
            case UInt8(ascii: "\""):
                guard let text = stringValue() else { return nil }
                value = text
            case UInt8(ascii: "t"):
                guard literal("true") else { return nil }
                value = "true"
            case UInt8(ascii: "f"):
                guard literal("false") else { return nil }
                value = "false"
            default:
                guard let range = number(),
                    let quantity = try? Quantity(parsingUTF8: UnsafeBufferPointer(rebasing: bytes[range]))
                else { return nil }
                value = quantity.description
            }
            count += 1
            guard count <= maxProperties, properties[key] == nil else { return nil }
            properties[key] = value
            guard let another = afterMember() else { return nil }
            if another { continue }
            return properties
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
