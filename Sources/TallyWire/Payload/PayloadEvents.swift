import Glibc
import NIOCore
import TallyCore

/// The events a payload is encoded from, field by field: ``UsageEvent``s, or the spans of
/// stored records (``EventSpans``) that the shipper encodes without making a ``UsageEvent``
/// each. ``BatchPayloadEncoder/columns(of:uuids:)`` is generic over it, so both give the same
/// bytes for the same events.
protocol PayloadEvents {
    associatedtype Text: PayloadText
    var count: Int { get }
    func tenant(_ position: Int) -> Text
    func metric(_ position: Int) -> Text
    func timestamp(_ position: Int) -> EventTime
    func quantity(_ position: Int) -> Quantity
    func id(_ position: Int) -> Text?
    /// Each property's key and value, in the event's (sorted) order.
    func forEachProperty(_ position: Int, _ body: (Text, Text) -> Void)
}

/// A string of a payload's tables, equal to another exactly when their UTF-8 bytes are: the
/// payload carries bytes, and the collector fingerprints what it decodes. (Swift's `String`
/// equality is canonical equivalence: `"é"` as one scalar equals `"e"` with a combining accent.
/// A table keyed by `String` once gave a batch's second spelling the first one's bytes, so the
/// same event sent in two batches could arrive with two fingerprints.)
protocol PayloadText: Hashable {
    /// Writes a `vstr`: a varint byte length, then the bytes.
    func write(to out: inout ByteBuffer)
    /// Whether its UTF-8 bytes sort before `other`'s.
    func precedes(_ other: Self) -> Bool
    /// Its 16 bytes and case when it is canonical UUID text (``UUIDText``).
    var uuid: (high: UInt64, low: UInt64, kind: BatchPayloadLayout.IdKind)? { get }
}

/// A `String` compared and hashed by its UTF-8 bytes.
struct UTF8Bytes: PayloadText {
    let text: String

    static func == (lhs: UTF8Bytes, rhs: UTF8Bytes) -> Bool {
        lhs.withBytes { left in rhs.withBytes { right in left == right } }
    }

    func hash(into hasher: inout Hasher) { withBytes { $0.hash(into: &hasher) } }

    /// Its UTF-8 bytes as ``RawText`` (a native string's own storage; a copy otherwise).
    private func withBytes<T>(_ body: (RawText) -> T) -> T {
        if let result = text.utf8.withContiguousStorageIfAvailable({ body(RawText(bytes: $0)) }) { return result }
        return Array(text.utf8).withUnsafeBufferPointer { body(RawText(bytes: $0)) }
    }

    func write(to out: inout ByteBuffer) { out.writeVarintString(text) }
    func precedes(_ other: UTF8Bytes) -> Bool { text.utf8.lexicographicallyPrecedes(other.text.utf8) }
    var uuid: (high: UInt64, low: UInt64, kind: BatchPayloadLayout.IdKind)? { UUIDText.parse(text) }
}

/// Bytes of a buffer that outlives the encoding (an ``EventSpans``' bytes, held for it).
struct RawText: PayloadText {
    let bytes: UnsafeBufferPointer<UInt8>

    static func == (lhs: RawText, rhs: RawText) -> Bool {
        guard lhs.bytes.count == rhs.bytes.count else { return false }
        guard let left = lhs.bytes.baseAddress, let right = rhs.bytes.baseAddress else { return true }
        return memcmp(left, right, lhs.bytes.count) == 0
    }

    func hash(into hasher: inout Hasher) { hasher.combine(bytes: UnsafeRawBufferPointer(bytes)) }

    func write(to out: inout ByteBuffer) {
        out.writeVarint(UInt64(bytes.count))
        out.writeBytes(UnsafeRawBufferPointer(bytes))
    }

    func precedes(_ other: RawText) -> Bool { bytes.lexicographicallyPrecedes(other.bytes) }
    var uuid: (high: UInt64, low: UInt64, kind: BatchPayloadLayout.IdKind)? { UUIDText.parse(bytes: bytes) }
}

struct StringEvents: PayloadEvents {
    let events: [UsageEvent]

    var count: Int { events.count }
    func tenant(_ position: Int) -> UTF8Bytes { UTF8Bytes(text: events[position].tenant) }
    func metric(_ position: Int) -> UTF8Bytes { UTF8Bytes(text: events[position].metric) }
    func timestamp(_ position: Int) -> EventTime { events[position].timestamp }
    func quantity(_ position: Int) -> Quantity { events[position].quantity }
    func id(_ position: Int) -> UTF8Bytes? { events[position].id.map(UTF8Bytes.init) }

    func forEachProperty(_ position: Int, _ body: (UTF8Bytes, UTF8Bytes) -> Void) {
        for property in events[position].properties { body(UTF8Bytes(text: property.key), UTF8Bytes(text: property.value)) }
    }
}

struct SpanEvents: PayloadEvents {
    let spans: EventSpans
    /// `spans.bytes`, held for the encoding.
    let bytes: UnsafeBufferPointer<UInt8>

    private func text(_ span: EventSpans.Span) -> RawText {
        RawText(bytes: UnsafeBufferPointer(rebasing: bytes[span.range]))
    }

    var count: Int { spans.events.count }
    func tenant(_ position: Int) -> RawText { text(spans.events[position].tenant) }
    func metric(_ position: Int) -> RawText { text(spans.events[position].metric) }
    func timestamp(_ position: Int) -> EventTime { spans.events[position].timestamp }
    func quantity(_ position: Int) -> Quantity { spans.events[position].quantity }
    func id(_ position: Int) -> RawText? { spans.events[position].id.map(text) }

    func forEachProperty(_ position: Int, _ body: (RawText, RawText) -> Void) {
        for index in spans.events[position].properties {
            let property = spans.properties[index]
            body(text(property.key), text(property.value))
        }
    }
}
