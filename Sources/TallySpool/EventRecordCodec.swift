public import TallyCore

/// The payload of one spool record: one ``UsageEvent``, compact, versioned and exact.
///
/// Decoding gives back exactly the event that was encoded (every field, the quantity to the
/// nano-unit, the properties in their canonical order). Layout, version 1:
/// ```
/// u8      codec version: 0x01
/// u8      flags: bit 0 = the event has an id; other bits must be zero
/// varint  timestamp: microseconds since the epoch, zigzag-encoded Int64
/// varint  quantity: nano-units, zigzag-encoded Int128
/// str     tenant, str metric, [str id when flag bit 0]
/// varint  property count, then per property: str key, str value
/// ```
/// `varint` is unsigned LEB128 (7 bits per byte, low bits first); `str` is a varint byte length
/// then that many bytes of UTF-8. A decoder refuses unknown versions, unknown flags, invalid
/// UTF-8, unsorted or repeated property keys, and trailing bytes.
public enum EventRecordCodec {
    public static let version: UInt8 = 0x01

    /// Appends the payload of `event` to `out`.
    public static func encode(_ event: UsageEvent, into out: inout [UInt8]) {
        out.append(version)
        out.append(event.id == nil ? 0 : 1)
        appendVarint(UInt128(zigzag64: event.timestamp.microseconds), to: &out)
        appendVarint(UInt128(zigzag128: event.quantity.nanos), to: &out)
        appendString(event.tenant, to: &out)
        appendString(event.metric, to: &out)
        if let id = event.id { appendString(id, to: &out) }
        appendVarint(UInt128(event.properties.count), to: &out)
        for property in event.properties {
            appendString(property.key, to: &out)
            appendString(property.value, to: &out)
        }
    }

    public static func encode(_ event: UsageEvent) -> [UInt8] {
        var out: [UInt8] = []
        encode(event, into: &out)
        return out
    }

    public static func decode(_ bytes: [UInt8]) throws(SpoolDecodingError) -> UsageEvent {
        try bytes.withBytes { buffer throws(SpoolDecodingError) in try decode(buffer) }
    }

    /// Decodes one payload; the whole buffer must be exactly one event.
    public static func decode(_ bytes: UnsafeRawBufferPointer) throws(SpoolDecodingError) -> UsageEvent {
        var reader = PayloadReader(bytes: bytes)
        let codecVersion = try reader.byte()
        guard codecVersion == version else { throw SpoolDecodingError("unknown codec version \(codecVersion)") }
        let flags = try reader.byte()
        guard flags & ~1 == 0 else { throw SpoolDecodingError("unknown flags \(flags)") }
        let timestamp = try reader.varint().zigzagDecoded64()
        let nanos = try reader.varint().zigzagDecoded128()
        let tenant = try reader.string()
        let metric = try reader.string()
        let id = flags & 1 == 1 ? try reader.string() : nil
        let count = try reader.varint()
        guard count <= UInt128(reader.remaining / 2) else { throw SpoolDecodingError("property count \(count) is too large") }
        var pairs: [(String, String)] = []
        pairs.reserveCapacity(Int(count))
        for _ in 0..<Int(count) {
            let key = try reader.string()
            let value = try reader.string()
            if let previous = pairs.last?.0, !previous.utf8.lexicographicallyPrecedes(key.utf8) {
                throw SpoolDecodingError("property keys are not unique and sorted")
            }
            pairs.append((key, value))
        }
        guard reader.remaining == 0 else { throw SpoolDecodingError("\(reader.remaining) trailing bytes") }
        return UsageEvent(
            tenant: tenant, metric: metric, quantity: Quantity(nanos: nanos),
            timestamp: EventTime(microseconds: timestamp), id: id, properties: Properties(pairs))
    }

    /// The timestamp of an encoded event, read without decoding the rest.
    static func timestamp(_ bytes: UnsafeRawBufferPointer) -> Int64? {
        var reader = PayloadReader(bytes: bytes)
        guard (try? reader.byte()) == version, (try? reader.byte()) != nil,
            let raw = try? reader.varint(), let value = try? raw.zigzagDecoded64()
        else { return nil }
        return value
    }

    static func appendVarint(_ value: UInt128, to out: inout [UInt8]) {
        var rest = value
        while rest >= 0x80 {
            out.append(UInt8(truncatingIfNeeded: rest) | 0x80)
            rest >>= 7
        }
        out.append(UInt8(truncatingIfNeeded: rest))
    }

    static func appendString(_ value: String, to out: inout [UInt8]) {
        appendVarint(UInt128(value.utf8.count), to: &out)
        out.append(contentsOf: value.utf8)
    }
}

/// Reads a payload front to back; every read is bounds-checked.
struct PayloadReader {
    let bytes: UnsafeRawBufferPointer
    var index = 0

    var remaining: Int { bytes.count - index }

    mutating func byte() throws(SpoolDecodingError) -> UInt8 {
        guard index < bytes.count else { throw SpoolDecodingError("truncated payload") }
        defer { index += 1 }
        return bytes[index]
    }

    mutating func varint() throws(SpoolDecodingError) -> UInt128 {
        var value: UInt128 = 0
        var shift: UInt128 = 0
        while true {
            let next = try byte()
            guard shift < 128, shift != 126 || next & 0x7F <= 0x03 else { throw SpoolDecodingError("varint overflow") }
            value |= UInt128(next & 0x7F) << shift
            if next & 0x80 == 0 { return value }
            shift += 7
        }
    }

    mutating func string() throws(SpoolDecodingError) -> String {
        let length = try varint()
        guard length <= UInt128(remaining) else { throw SpoolDecodingError("string length \(length) runs past the payload") }
        let slice = UnsafeRawBufferPointer(rebasing: bytes[index..<(index + Int(length))])
        index += Int(length)
        guard let text = String(validating: slice.bindMemory(to: UInt8.self), as: UTF8.self) else {
            throw SpoolDecodingError("invalid UTF-8")
        }
        return text
    }
}

extension UInt128 {
    init(zigzag64 value: Int64) { self.init(UInt64(bitPattern: (value << 1) ^ (value >> 63))) }
    init(zigzag128 value: Int128) { self.init(bitPattern: (value << 1) ^ (value >> 127)) }

    func zigzagDecoded64() throws(SpoolDecodingError) -> Int64 {
        guard self <= UInt128(UInt64.max) else { throw SpoolDecodingError("timestamp out of range") }
        let raw = UInt64(self)
        return Int64(bitPattern: (raw >> 1) ^ (0 &- (raw & 1)))
    }

    func zigzagDecoded128() -> Int128 {
        Int128(bitPattern: (self >> 1) ^ (0 &- (self & 1)))
    }
}
