public import NIOCore
public import TallyCore

/// The byte layout of a batch payload (SPEC.md §5): a small header, the event columns
/// (zstd-compressed or raw), then the raw 16-byte UUID ids, which are random and would only
/// dilute zstd's statistics.
public enum BatchPayloadLayout {
    public static let version: UInt8 = 1
    /// version u8, event count u32, encoding u8, raw columns length u32, stored columns length u32.
    public static let headerSize = 14

    /// How the columns section is stored.
    public enum Encoding: UInt8, Sendable, Hashable {
        case raw = 0
        case zstd = 1
    }

    /// The two low bits of an event's flags byte: what kind of id it has.
    enum IdKind: UInt8 {
        case none = 0
        /// A canonical lowercase UUID (`8-4-4-4-12` hex), sent as 16 raw bytes.
        case uuidLower = 1
        /// A canonical uppercase UUID, sent as 16 raw bytes.
        case uuidUpper = 2
        /// Any other id, sent as text.
        case text = 3
    }

    /// Flags bit 2: the quantity column holds nano-units instead of whole units.
    static let fractionalQuantity: UInt8 = 0x04
}

/// Encodes events into a batch payload. The same events and the same compression setting
/// always give the same bytes; fingerprints are not sent (the collector recomputes them).
/// Holds a zstd context: one encoder per task.
public struct BatchPayloadEncoder {
    public enum Compression: Sendable, Hashable {
        /// Columns stored as they are: for test vectors and debugging.
        case none
        /// Columns compressed with zstd at this level (1 to 19).
        case zstd(level: Int32)
    }

    public let compression: Compression
    private let compressor: ZstdCompressor?

    public init(compression: Compression = .zstd(level: 3)) throws(WireError) {
        self.compression = compression
        switch compression {
        case .none:
            compressor = nil
        case .zstd(let level):
            do {
                compressor = try ZstdCompressor(level: level)
            } catch {
                throw WireError(.internalError, "cannot set up zstd at level \(level): \(error)")
            }
        }
    }

    /// The payload of `events`, in order.
    public func encode(_ events: [UsageEvent]) throws(WireError) -> ByteBuffer {
        try encode(StringEvents(events: events))
    }

    /// The payload of `events`, in order: the same bytes as for the same events as
    /// ``UsageEvent``s, with no ``UsageEvent`` made (the shipper's path, from the spool).
    public func encode(_ events: EventSpans) throws(WireError) -> ByteBuffer {
        try events.bytes.withUnsafeBufferPointer { bytes throws(WireError) in try encode(SpanEvents(spans: events, bytes: bytes)) }
    }

    private func encode(_ events: some PayloadEvents) throws(WireError) -> ByteBuffer {
        guard events.count <= Int(UInt32.max) else {
            throw WireError(.tooManyEvents, "\(events.count) events do not fit one batch")
        }
        var uuids = ByteBuffer()
        let columns = Self.columns(of: events, uuids: &uuids)
        // The columns and their compression are each a few tenths of a millisecond of the
        // agent's encoding thread: whatever waits for the core (the API server beside the agent,
        // the agent's ingest) runs in between (YieldPoint).
        YieldPoint.between()
        var out = ByteBuffer()
        out.reserveCapacity(BatchPayloadLayout.headerSize + columns.readableBytes + uuids.readableBytes)
        out.writeInteger(BatchPayloadLayout.version)
        out.writeInteger(UInt32(events.count))
        guard columns.readableBytes <= Int(UInt32.max) else {
            throw WireError(.payloadTooLarge, "the columns of this batch are \(columns.readableBytes) bytes")
        }
        if let compressor {
            let stored: [UInt8]
            do {
                stored = try compressor.compress(columns)
            } catch {
                throw WireError(.internalError, "zstd failed to compress a batch: \(error)")
            }
            out.writeInteger(BatchPayloadLayout.Encoding.zstd.rawValue)
            out.writeInteger(UInt32(columns.readableBytes))
            out.writeInteger(UInt32(stored.count))
            out.writeBytes(stored)
        } else {
            out.writeInteger(BatchPayloadLayout.Encoding.raw.rawValue)
            out.writeInteger(UInt32(columns.readableBytes))
            out.writeInteger(UInt32(columns.readableBytes))
            out.writeImmutableBuffer(columns)
        }
        out.writeImmutableBuffer(uuids)
        return out
    }

    /// A string table ordered by descending use, ties by first use, so the commonest values get
    /// the smallest (one-byte) indexes. Each use hashes its string once: ``count(_:)`` gives the
    /// value's place in first-use order, and ``finish()`` maps those places to the final indexes
    /// (string hashing was a fifth of the agent's CPU while it shipped a backlog, when every
    /// value was hashed again to find its final index).
    struct Table<Text: PayloadText> {
        private(set) var entries: [Text] = []
        private var counts: [Int] = []
        private var positions: [Text: Int] = [:]

        /// Tables up to this size are searched by comparing strings, not hashing them: most
        /// columns (metrics, most property values) have a handful of values, and comparing a
        /// short string is a few nanoseconds where hashing one is tens.
        static var scanLimit: Int { 16 }

        /// Counts one use of `value`; returns its place in first-use order.
        @discardableResult
        mutating func count(_ value: Text) -> Int {
            if entries.count <= Self.scanLimit {
                if let position = entries.firstIndex(of: value) {
                    counts[position] += 1
                    return position
                }
            } else if let position = positions[value] {
                counts[position] += 1
                return position
            }
            let position = entries.count
            entries.append(value)
            counts.append(1)
            if entries.count > Self.scanLimit {
                if positions.isEmpty {
                    for (place, entry) in entries.enumerated() { positions[entry] = place }
                } else {
                    positions[value] = position
                }
            }
            return position
        }

        /// Sorts the entries; returns, for each place in first-use order, the final index.
        mutating func finish() -> [Int] {
            let order = entries.indices.sorted { counts[$0] != counts[$1] ? counts[$0] > counts[$1] : $0 < $1 }
            entries = order.map { entries[$0] }
            var index = [Int](repeating: 0, count: order.count)
            for (final, place) in order.enumerated() { index[place] = final }
            return index
        }

        func write(to out: inout ByteBuffer) {
            out.writeVarint(UInt64(entries.count))
            for entry in entries { entry.write(to: &out) }
        }
    }

    static func columns<Events: PayloadEvents>(of events: Events, uuids: inout ByteBuffer) -> ByteBuffer {
        var tenants = Table<Events.Text>()
        var metrics = Table<Events.Text>()
        var tenantPlaces: [Int] = []
        var metricPlaces: [Int] = []
        tenantPlaces.reserveCapacity(events.count)
        metricPlaces.reserveCapacity(events.count)
        // Property keys in first-use order; each key's values in a table of their own; and each
        // property as (event, key place, value place), in event order.
        var keys = Table<Events.Text>()
        var valueTables: [Table<Events.Text>] = []
        var uses: [(event: Int32, key: Int32, value: Int32)] = []
        for position in 0..<events.count {
            YieldPoint.after(step: position, every: 128)
            tenantPlaces.append(tenants.count(events.tenant(position)))
            metricPlaces.append(metrics.count(events.metric(position)))
            events.forEachProperty(position) { name, value in
                let key = keys.count(name)
                if key == valueTables.count { valueTables.append(Table()) }
                uses.append((Int32(position), Int32(key), Int32(valueTables[key].count(value))))
            }
        }
        let firstUseKeys = keys.entries
        // Keys go out sorted by their UTF-8 bytes.
        let keyOrder = firstUseKeys.indices.sorted { firstUseKeys[$0].precedes(firstUseKeys[$1]) }
        var sortedKey = [Int](repeating: 0, count: keyOrder.count)
        for (sorted, place) in keyOrder.enumerated() { sortedKey[place] = sorted }
        let tenantIndex = tenants.finish()
        let metricIndex = metrics.finish()
        let valueIndexes = valueTables.indices.map { valueTables[$0].finish() }
        // Each key's column: the value's index + 1, or 0 when the event has no such property
        // (the first one when an event repeats a key).
        var valueColumns = [UInt32](repeating: 0, count: keyOrder.count * events.count)
        for use in uses {
            let cell = sortedKey[Int(use.key)] * events.count + Int(use.event)
            if valueColumns[cell] == 0 { valueColumns[cell] = UInt32(valueIndexes[Int(use.key)][Int(use.value)] + 1) }
        }

        var out = ByteBuffer()
        out.reserveCapacity(events.count * 12 + 1024)
        tenants.write(to: &out)
        metrics.write(to: &out)
        out.writeVarint(UInt64(keyOrder.count))
        for place in keyOrder { firstUseKeys[place].write(to: &out) }
        for place in keyOrder { valueTables[place].write(to: &out) }
        for place in tenantPlaces { out.writeVarint(UInt64(tenantIndex[place])) }
        for place in metricPlaces { out.writeVarint(UInt64(metricIndex[place])) }
        var previous: Int64 = 0
        for position in 0..<events.count {
            let microseconds = events.timestamp(position).microseconds
            out.writeVarint(ZigZag.encode(microseconds &- previous))
            previous = microseconds
        }
        var textIds: [Events.Text] = []
        for position in 0..<events.count {
            var flags = events.quantity(position).isWhole ? 0 : BatchPayloadLayout.fractionalQuantity
            if let id = events.id(position) {
                if let (high, low, kind) = id.uuid {
                    flags |= kind.rawValue
                    uuids.writeInteger(high, endianness: .big)
                    uuids.writeInteger(low, endianness: .big)
                } else {
                    flags |= BatchPayloadLayout.IdKind.text.rawValue
                    textIds.append(id)
                }
            }
            out.writeInteger(flags)
        }
        for position in 0..<events.count {
            let quantity = events.quantity(position)
            out.writeVarint128(ZigZag.encode(quantity.isWhole ? quantity.nanos / Quantity.nanosPerUnit : quantity.nanos))
        }
        for value in valueColumns { out.writeVarint(UInt64(value)) }
        for id in textIds { id.write(to: &out) }
        return out
    }
}

extension ByteBuffer {
    /// Writes a `vstr`: a varint byte length, then the UTF-8 bytes.
    mutating func writeVarintString(_ text: String) {
        writeVarint(UInt64(text.utf8.count))
        writeString(text)
    }

    /// Reads a `vstr` of at most `maxBytes` bytes, or nil.
    mutating func readVarintString() -> String? {
        let start = readerIndex
        guard let length = readVarint(), length <= UInt64(readableBytes),
            let text = readWithUnsafeReadableBytes({ raw -> (Int, String?) in
                let bytes = UnsafeRawBufferPointer(rebasing: raw[..<Int(length)])
                return (Int(length), bytes.withMemoryRebound(to: UInt8.self) { UTF8Text.decode($0) })
            })
        else {
            moveReaderIndex(to: start)
            return nil
        }
        return text
    }
}

extension ByteBuffer: ReadableBytes {
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try withUnsafeReadableBytes(body)
    }
}

/// Canonical UUID text (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, all lowercase or all
/// uppercase hex) and its 16 bytes. Any other spelling stays text, so an id always comes back
/// exactly as the caller wrote it.
enum UUIDText {
    /// The 16 bytes (as two big-endian halves) and the case of canonical UUID text, or nil.
    /// Straight from the string's UTF-8 bytes, with no allocation: it runs for every event id an
    /// agent ships (it was a seventh of the agent's CPU during a drain when each character was
    /// looked up in a set of hyphen positions).
    static func parse(_ text: String) -> (high: UInt64, low: UInt64, kind: BatchPayloadLayout.IdKind)? {
        if let parsed = text.utf8.withContiguousStorageIfAvailable({ parse(bytes: $0) }) { return parsed }
        return Array(text.utf8).withUnsafeBufferPointer { parse(bytes: $0) }
    }

    static func parse(bytes: UnsafeBufferPointer<UInt8>) -> (high: UInt64, low: UInt64, kind: BatchPayloadLayout.IdKind)? {
        guard bytes.count == 36, bytes[8] == dash, bytes[13] == dash, bytes[18] == dash, bytes[23] == dash else { return nil }
        // One table lookup per character instead of a branch per character class: every
        // event's id goes through here as the agent ships (a twentieth of its encoding thread).
        var high: UInt64 = 0
        var low: UInt64 = 0
        var seen: UInt8 = 0
        nibbles.withUnsafeBufferPointer { table in
            func half(_ from: Int, _ to: Int) -> UInt64 {
                var value: UInt64 = 0
                for position in from..<to where position != 8 && position != 13 && position != 18 && position != 23 {
                    let entry = table[Int(bytes[position])]
                    seen |= entry
                    value = value << 4 | UInt64(entry & 0x0F)
                }
                return value
            }
            high = half(0, 19)
            low = half(19, 36)
        }
        // An invalid character, or lowercase and uppercase letters mixed: not canonical.
        if seen & Self.invalid != 0 || seen & (Self.lower | Self.upper) == Self.lower | Self.upper { return nil }
        return (high, low, seen & Self.upper != 0 ? .uuidUpper : .uuidLower)
    }

    private static let dash = UInt8(ascii: "-")
    private static let lower: UInt8 = 0x10
    private static let upper: UInt8 = 0x20
    private static let invalid: UInt8 = 0x80
    /// Each byte's hex value in the low four bits, with `lower` or `upper` for a letter, and
    /// `invalid` for anything that is not a hex digit.
    private static let nibbles: [UInt8] = (0...255).map { byte in
        switch UInt8(byte) {
        case 0x30...0x39: UInt8(byte - 0x30)
        case 0x61...0x66: UInt8(byte - 0x61 + 10) | lower
        case 0x41...0x46: UInt8(byte - 0x41 + 10) | upper
        default: invalid
        }
    }

    private static let lowerDigits = Array("0123456789abcdef".utf8)
    private static let upperDigits = Array("0123456789ABCDEF".utf8)

    static func format(_ bytes: [UInt8], uppercase: Bool) -> String {
        let digits = uppercase ? upperDigits : lowerDigits
        return String(unsafeUninitializedCapacity: bytes.count * 2 + 4) { out in
            var index = 0
            for (position, byte) in bytes.enumerated() {
                if position == 4 || position == 6 || position == 8 || position == 10 {
                    out[index] = UInt8(ascii: "-")
                    index += 1
                }
                out[index] = digits[Int(byte >> 4)]
                out[index + 1] = digits[Int(byte & 0x0F)]
                index += 2
            }
            return index
        }
    }
}
