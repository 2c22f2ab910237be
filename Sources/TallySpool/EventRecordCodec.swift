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
        out.appendVarint(ZigZag.encode(event.timestamp.microseconds))
        out.appendVarint(ZigZag.encode(event.quantity.nanos))
        out.appendVarintString(event.tenant)
        out.appendVarintString(event.metric)
        if let id = event.id { out.appendVarintString(id) }
        out.appendVarint(UInt64(event.properties.count))
        for property in event.properties {
            out.appendVarintString(property.key)
            out.appendVarintString(property.value)
        }
    }

    /// Appends the payload of an event read as `event` from `line`: the same bytes as the
    /// payload of the ``UsageEvent`` the line decodes to.
    public static func encode(_ event: PlainEvent, in line: UnsafeBufferPointer<UInt8>, into out: inout [UInt8]) {
        func string(_ range: Range<Int>) {
            out.appendVarint(UInt64(range.count))
            out.append(contentsOf: UnsafeBufferPointer(rebasing: line[range]))
        }
        out.append(version)
        out.append(event.id == nil ? 0 : 1)
        out.appendVarint(ZigZag.encode(event.timestamp.microseconds))
        out.appendVarint(ZigZag.encode(event.quantity.nanos))
        string(event.tenant)
        string(event.metric)
        if let id = event.id { string(id) }
        out.appendVarint(UInt64(event.properties.count))
        for property in event.properties {
            string(property.key)
            string(property.value)
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
        let (hasId, timestamp, nanos) = try head(&reader)
        let tenant = try reader.string()
        let metric = try reader.string()
        let id = hasId ? try reader.string() : nil
        let count = try reader.varint()
        guard count <= UInt128(reader.remaining / 2) else { throw SpoolDecodingError("property count \(count) is too large") }
        var elements: [Property] = []
        elements.reserveCapacity(Int(count))
        for _ in 0..<Int(count) {
            let key = try reader.string()
            elements.append(Property(key: key, value: try reader.string()))
        }
        guard let properties = Properties(inOrder: elements) else { throw SpoolDecodingError("property keys are not unique and sorted") }
        guard reader.remaining == 0 else { throw SpoolDecodingError("\(reader.remaining) trailing bytes") }
        return UsageEvent(
            tenant: tenant, metric: metric, quantity: Quantity(nanos: nanos),
            timestamp: EventTime(microseconds: timestamp), id: id, properties: properties)
    }

    /// What precedes the strings: the version and flags, checked, then the timestamp and the
    /// quantity's nano-units.
    private static func head(_ reader: inout PayloadReader) throws(SpoolDecodingError) -> (hasId: Bool, timestamp: Int64, nanos: Int128) {
        let codecVersion = try reader.byte()
        guard codecVersion == version else { throw SpoolDecodingError("unknown codec version \(codecVersion)") }
        let flags = try reader.byte()
        guard flags & ~1 == 0 else { throw SpoolDecodingError("unknown flags \(flags)") }
        let timestamp = try reader.timestamp()
        return (flags & 1 == 1, timestamp, ZigZag.decode(try reader.varint()))
    }

    /// Decodes one payload into `spans` (its bytes appended, its strings' spans pointing into
    /// them), refusing exactly what ``decode(_:)-(UnsafeRawBufferPointer)`` refuses; adds nothing
    /// when it throws.
    public static func decode(_ bytes: UnsafeRawBufferPointer, into spans: inout EventSpans) throws(SpoolDecodingError) {
        // Spans are read in the payload, then placed where it will be in `spans.bytes`.
        let base = spans.bytes.count
        func placed(_ span: EventSpans.Span) -> EventSpans.Span { EventSpans.Span(start: base + span.start, count: span.count) }
        var reader = PayloadReader(bytes: bytes)
        let (hasId, timestamp, nanos) = try head(&reader)
        let tenant = placed(try reader.span())
        let metric = placed(try reader.span())
        let id = hasId ? placed(try reader.span()) : nil
        let count = try reader.varint()
        guard count <= UInt128(reader.remaining / 2) else { throw SpoolDecodingError("property count \(count) is too large") }
        let first = spans.properties.count
        do throws(SpoolDecodingError) {
            var previous: EventSpans.Span?
            for _ in 0..<Int(count) {
                let key = try reader.span()
                // Unique and sorted by their UTF-8 bytes, as `Properties(inOrder:)` checks.
                if let previous, !bytes[previous.range].lexicographicallyPrecedes(bytes[key.range]) {
                    throw SpoolDecodingError("property keys are not unique and sorted")
                }
                previous = key
                spans.properties.append(EventSpans.Property(key: placed(key), value: placed(try reader.span())))
            }
            guard reader.remaining == 0 else { throw SpoolDecodingError("\(reader.remaining) trailing bytes") }
        } catch {
            spans.properties.removeSubrange(first...)
            throw error
        }
        spans.bytes.append(contentsOf: bytes)
        spans.events.append(
            EventSpans.Event(
                timestamp: EventTime(microseconds: timestamp), quantity: Quantity(nanos: nanos), tenant: tenant, metric: metric, id: id,
                properties: first..<spans.properties.count))
    }

    /// `events` as spans, as a read of their records gives them (tests and benchmarks).
    public static func spans(of events: [UsageEvent]) -> EventSpans {
        var spans = EventSpans()
        for event in events {
            // A record of an encoded event always decodes.
            try? encode(event).withBytes { bytes throws(SpoolDecodingError) in try decode(bytes, into: &spans) }
        }
        return spans
    }

    /// The timestamp of an encoded event, read without decoding the rest.
    static func timestamp(_ bytes: UnsafeRawBufferPointer) -> Int64? {
        var reader = PayloadReader(bytes: bytes)
        guard (try? reader.byte()) == version, (try? reader.byte()) != nil else { return nil }
        return try? reader.timestamp()
    }
}

/// Reads a payload front to back through the core's ``ByteReader``, saying what is wrong.
struct PayloadReader {
    var reader: ByteReader

    init(bytes: UnsafeRawBufferPointer) { reader = ByteReader(bytes) }

    var remaining: Int { reader.remaining }

    mutating func byte() throws(SpoolDecodingError) -> UInt8 {
        guard let byte = reader.byte() else { throw SpoolDecodingError("truncated payload") }
        return byte
    }

    mutating func varint() throws(SpoolDecodingError) -> UInt128 {
        guard let value = reader.varint() else { throw SpoolDecodingError(reader.remaining == 0 ? "truncated payload" : "varint overflow") }
        return value
    }

    mutating func timestamp() throws(SpoolDecodingError) -> Int64 {
        let raw = try varint()
        guard raw <= UInt128(UInt64.max) else { throw SpoolDecodingError("timestamp out of range") }
        return ZigZag.decode(UInt64(raw))
    }

    /// A string's place in the payload, checked as ``string()`` checks it.
    mutating func span() throws(SpoolDecodingError) -> EventSpans.Span {
        let start = try stringLength()
        guard let slice = reader.slice(count: start.count), UTF8Text.isValid(slice.assumingMemoryBound(to: UInt8.self)) else {
            throw SpoolDecodingError("invalid UTF-8")
        }
        return EventSpans.Span(start: start.offset, count: start.count)
    }

    /// A string's byte length, checked against what is left, and where its bytes start.
    private mutating func stringLength() throws(SpoolDecodingError) -> (offset: Int, count: Int) {
        let length = try varint()
        guard length <= UInt128(remaining) else { throw SpoolDecodingError("string length \(length) runs past the payload") }
        return (reader.index, Int(length))
    }

    mutating func string() throws(SpoolDecodingError) -> String {
        guard let text = reader.utf8(count: try stringLength().count) else { throw SpoolDecodingError("invalid UTF-8") }
        return text
    }
}
