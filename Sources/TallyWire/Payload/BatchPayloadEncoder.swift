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
        guard events.count <= Int(UInt32.max) else {
            throw WireError(.tooManyEvents, "\(events.count) events do not fit one batch")
        }
        var uuids = ByteBuffer()
        let columns = Self.columns(of: events, uuids: &uuids)
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
    /// the smallest (one-byte) indexes.
    struct Table {
        private(set) var entries: [String] = []
        private var counts: [Int] = []
        private var positions: [String: Int] = [:]

        mutating func count(_ value: String) {
            if let position = positions[value] {
                counts[position] += 1
            } else {
                positions[value] = entries.count
                entries.append(value)
                counts.append(1)
            }
        }

        /// Sorts the entries and returns each value's final index.
        mutating func finish() -> [String: Int] {
            let order = entries.indices.sorted { counts[$0] != counts[$1] ? counts[$0] > counts[$1] : $0 < $1 }
            entries = order.map { entries[$0] }
            var index: [String: Int] = [:]
            for (position, value) in entries.enumerated() { index[value] = position }
            return index
        }

        func write(to out: inout ByteBuffer) {
            out.writeVarint(UInt64(entries.count))
            for entry in entries { out.writeVarintString(entry) }
        }
    }

    static func columns(of events: [UsageEvent], uuids: inout ByteBuffer) -> ByteBuffer {
        var tenants = Table()
        var metrics = Table()
        var keySet: Set<String> = []
        for event in events {
            tenants.count(event.tenant)
            metrics.count(event.metric)
            for property in event.properties { keySet.insert(property.key) }
        }
        let keys = keySet.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
        var valueTables = [Table](repeating: Table(), count: keys.count)
        var keyIndex: [String: Int] = [:]
        for (position, key) in keys.enumerated() { keyIndex[key] = position }
        for event in events {
            for property in event.properties {
                if let position = keyIndex[property.key] { valueTables[position].count(property.value) }
            }
        }
        let tenantIndex = tenants.finish()
        let metricIndex = metrics.finish()
        let valueIndexes = valueTables.indices.map { valueTables[$0].finish() }

        var out = ByteBuffer()
        out.reserveCapacity(events.count * 12 + 1024)
        tenants.write(to: &out)
        metrics.write(to: &out)
        out.writeVarint(UInt64(keys.count))
        for key in keys { out.writeVarintString(key) }
        for table in valueTables { table.write(to: &out) }
        for event in events { out.writeVarint(UInt64(tenantIndex[event.tenant] ?? 0)) }
        for event in events { out.writeVarint(UInt64(metricIndex[event.metric] ?? 0)) }
        var previous: Int64 = 0
        for event in events {
            out.writeVarint(ZigZag.encode(event.timestamp.microseconds &- previous))
            previous = event.timestamp.microseconds
        }
        var textIds: [String] = []
        for event in events {
            var flags = event.quantity.isWhole ? 0 : BatchPayloadLayout.fractionalQuantity
            if let id = event.id {
                if let (bytes, kind) = UUIDText.parse(id) {
                    flags |= kind.rawValue
                    uuids.writeBytes(bytes)
                } else {
                    flags |= BatchPayloadLayout.IdKind.text.rawValue
                    textIds.append(id)
                }
            }
            out.writeInteger(flags)
        }
        for event in events {
            let quantity = event.quantity
            out.writeVarint128(ZigZag.encode(quantity.isWhole ? quantity.nanos / Quantity.nanosPerUnit : quantity.nanos))
        }
        for (position, key) in keys.enumerated() {
            for event in events {
                if let value = event.properties[key], let index = valueIndexes[position][value] {
                    out.writeVarint(UInt64(index) + 1)
                } else {
                    out.writeVarint(0)
                }
            }
        }
        for id in textIds { out.writeVarintString(id) }
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
    static let hyphens: Set<Int> = [8, 13, 18, 23]

    static func parse(_ text: String) -> ([UInt8], BatchPayloadLayout.IdKind)? {
        let utf8 = text.utf8
        guard utf8.count == 36 else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(16)
        var sawLower = false
        var sawUpper = false
        var high: UInt8?
        for (position, char) in utf8.enumerated() {
            if hyphens.contains(position) {
                guard char == UInt8(ascii: "-") else { return nil }
                continue
            }
            let nibble: UInt8
            switch char {
            case 0x30...0x39: nibble = char - 0x30
            case 0x61...0x66:
                nibble = char - 0x61 + 10
                sawLower = true
            case 0x41...0x46:
                nibble = char - 0x41 + 10
                sawUpper = true
            default: return nil
            }
            if let value = high {
                bytes.append(value << 4 | nibble)
                high = nil
            } else {
                high = nibble
            }
        }
        if sawLower && sawUpper { return nil }
        return (bytes, sawUpper ? .uuidUpper : .uuidLower)
    }

    static func format(_ bytes: [UInt8], uppercase: Bool) -> String {
        let digits = Array((uppercase ? "0123456789ABCDEF" : "0123456789abcdef").utf8)
        var out: [UInt8] = []
        out.reserveCapacity(36)
        for (position, byte) in bytes.enumerated() {
            if position == 4 || position == 6 || position == 8 || position == 10 { out.append(UInt8(ascii: "-")) }
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}
