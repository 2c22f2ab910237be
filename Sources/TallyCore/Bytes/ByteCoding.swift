/// Tally's one byte codec: unsigned LEB128 varints, zigzag, fixed-width integers in either byte
/// order, and length-prefixed UTF-8. The wire payload (through NIO's `ByteBuffer`), the spool's
/// records, framing and slot files, and the ledger's aggregate log and property blobs all read
/// and write through it. The formats themselves are unchanged: the wire and the spool are
/// little-endian and LEB128 as SPEC.md and FORMAT.md say; the ledger's blobs stay big-endian,
/// because their byte order is part of rows already stored.
///
/// Everything is `@inlinable`: these run per field of every event on the hot paths.
public enum ZigZag {
    @inlinable public static func encode(_ value: Int64) -> UInt64 { UInt64(bitPattern: (value << 1) ^ (value >> 63)) }
    @inlinable public static func decode(_ value: UInt64) -> Int64 { Int64(bitPattern: value >> 1) ^ -Int64(bitPattern: value & 1) }
    @inlinable public static func encode(_ value: Int128) -> UInt128 { UInt128(bitPattern: (value << 1) ^ (value >> 127)) }
    @inlinable public static func decode(_ value: UInt128) -> Int128 { Int128(bitPattern: value >> 1) ^ -Int128(bitPattern: value & 1) }
}

/// Unsigned LEB128: 7 bits per byte, low bits first, the high bit set on every byte but the last.
public enum LEB128 {
    /// Calls `emit` with each byte of `value`.
    @inlinable public static func encode(_ value: UInt128, _ emit: (UInt8) -> Void) {
        var rest = value
        while rest >= 0x80 {
            emit(UInt8(truncatingIfNeeded: rest) | 0x80)
            rest >>= 7
        }
        emit(UInt8(truncatingIfNeeded: rest))
    }

    @inlinable public static func encode(_ value: UInt64, _ emit: (UInt8) -> Void) {
        var rest = value
        while rest >= 0x80 {
            emit(UInt8(truncatingIfNeeded: rest) | 0x80)
            rest >>= 7
        }
        emit(UInt8(truncatingIfNeeded: rest))
    }

    /// Decodes one varint of at most `maxBytes` bytes (19 hold 128 bits) from `next`; nil when the
    /// bytes run out, the value overflows 128 bits, or — with `shortestOnly` — it ends in a
    /// needless zero byte (so each value has exactly one encoding).
    @inlinable public static func decode(maxBytes: Int = 19, shortestOnly: Bool, _ next: () -> UInt8?) -> UInt128? {
        var value: UInt128 = 0
        var shift: UInt128 = 0
        for index in 0..<maxBytes {
            guard let byte = next() else { return nil }
            let low = UInt128(byte & 0x7F)
            if shift >= 128 || (shift > 0 && low >> (128 - shift) != 0) { return nil }
            value |= low << shift
            if byte & 0x80 == 0 {
                if shortestOnly && byte == 0 && index > 0 { return nil }
                return value
            }
            shift += 7
        }
        return nil
    }
}

extension Array where Element == UInt8 {
    @inlinable public mutating func appendVarint(_ value: UInt64) { LEB128.encode(value) { append($0) } }
    @inlinable public mutating func appendVarint(_ value: UInt128) { LEB128.encode(value) { append($0) } }

    /// The low `bytes` bytes of `value`, least significant first.
    @inlinable public mutating func appendLittleEndian(_ value: UInt64, bytes: Int) {
        for index in 0..<bytes { append(UInt8(truncatingIfNeeded: value >> UInt64(8 * index))) }
    }

    /// The low `bytes` bytes of `value`, most significant first.
    @inlinable public mutating func appendBigEndian(_ value: UInt64, bytes: Int) {
        // One copy of the big-endian representation's last `bytes` bytes: the aggregate log
        // writes a dozen integers per cell, and a byte-at-a-time loop was a tenth of the ledger
        // writer's time.
        guard bytes > 0, bytes <= 8 else {
            for index in stride(from: bytes - 1, through: 0, by: -1) { append(UInt8(truncatingIfNeeded: value >> UInt64(8 * index))) }
            return
        }
        Swift.withUnsafeBytes(of: value.bigEndian) { all in append(contentsOf: UnsafeRawBufferPointer(rebasing: all[(8 - bytes)...])) }
    }

    /// 16 bytes, most significant first.
    @inlinable public mutating func appendBigEndian(_ value: Int128) {
        let bits = UInt128(bitPattern: value)
        appendBigEndian(UInt64(truncatingIfNeeded: bits >> 64), bytes: 8)
        appendBigEndian(UInt64(truncatingIfNeeded: bits), bytes: 8)
    }

    /// A varint byte length, then the UTF-8 bytes.
    @inlinable public mutating func appendVarintString(_ text: String) {
        appendVarint(UInt64(text.utf8.count))
        append(contentsOf: text.utf8)
    }

    /// A big-endian u32 byte length, then the UTF-8 bytes.
    @inlinable public mutating func appendString32(_ text: String) {
        appendBigEndian(UInt64(text.utf8.count), bytes: 4)
        append(contentsOf: text.utf8)
    }
}

extension UnsafeRawBufferPointer {
    /// The `bytes`-byte little-endian integer at `offset` (the caller checked the bounds).
    @inlinable public func loadLittleEndian(at offset: Int, bytes count: Int) -> UInt64 {
        var value: UInt64 = 0
        for index in 0..<count { value |= UInt64(self[offset + index]) << UInt64(8 * index) }
        return value
    }

    /// The `bytes`-byte big-endian integer at `offset` (the caller checked the bounds).
    @inlinable public func loadBigEndian(at offset: Int, bytes count: Int) -> UInt64 {
        var value: UInt64 = 0
        for index in offset..<(offset + count) { value = value << 8 | UInt64(self[index]) }
        return value
    }
}

/// Reads bytes front to back; every read is bounds-checked and returns nil (consuming nothing
/// that matters: the caller gives up) when the bytes run out or are invalid.
public struct ByteReader {
    public let bytes: UnsafeRawBufferPointer
    public var index: Int

    @inlinable public init(_ bytes: UnsafeRawBufferPointer, from index: Int = 0) {
        self.bytes = bytes
        self.index = index
    }

    @inlinable public var remaining: Int { bytes.count - index }

    @inlinable public mutating func byte() -> UInt8? {
        guard index < bytes.count else { return nil }
        defer { index += 1 }
        return bytes[index]
    }

    /// See ``LEB128/decode(maxBytes:shortestOnly:_:)``: the same answer and the same bytes read.
    @inlinable public mutating func varint(maxBytes: Int = 19, shortestOnly: Bool = false) -> UInt128? {
        // Up to 9 bytes (63 bits) in 64-bit arithmetic, read in place: the lengths, counts and
        // timestamps that are most of a spool record's and an aggregate log cell's varints. A
        // byte at a time through a closure, in 128 bits, was about 3% of the agent's samples
        // while it shipped a backlog. Longer ones, and the refusals, take the general path from
        // the same start.
        let limit = Swift.min(maxBytes, 9, bytes.count - index)
        var value: UInt64 = 0
        var step = 0
        while step < limit {
            let next = bytes[index + step]
            value |= UInt64(next & 0x7F) << UInt64(7 * step)
            if next & 0x80 == 0 {
                guard !shortestOnly || next != 0 || step == 0 else { break }
                index += step + 1
                return UInt128(value)
            }
            step += 1
        }
        return LEB128.decode(maxBytes: maxBytes, shortestOnly: shortestOnly) { byte() }
    }

    @inlinable public mutating func littleEndian(bytes count: Int) -> UInt64? {
        guard count <= remaining else { return nil }
        defer { index += count }
        return bytes.loadLittleEndian(at: index, bytes: count)
    }

    @inlinable public mutating func bigEndian(bytes count: Int) -> UInt64? {
        guard count <= remaining else { return nil }
        defer { index += count }
        return bytes.loadBigEndian(at: index, bytes: count)
    }

    @inlinable public mutating func bigEndianInt128() -> Int128? {
        guard let high = bigEndian(bytes: 8), let low = bigEndian(bytes: 8) else { return nil }
        return Int128(bitPattern: UInt128(high) << 64 | UInt128(low))
    }

    /// `count` bytes as UTF-8; nil when they run past the end or are not valid UTF-8.
    @inlinable public mutating func utf8(count: Int) -> String? {
        guard count >= 0, count <= remaining else { return nil }
        let slice = UnsafeRawBufferPointer(rebasing: bytes[index..<(index + count)])
        index += count
        return slice.withMemoryRebound(to: UInt8.self) { UTF8Text.decode($0) }
    }

    /// `count` raw bytes; nil when they run past the end.
    @inlinable public mutating func slice(count: Int) -> UnsafeRawBufferPointer? {
        guard count >= 0, count <= remaining else { return nil }
        defer { index += count }
        return UnsafeRawBufferPointer(rebasing: bytes[index..<(index + count)])
    }
}

/// Text from UTF-8 bytes.
public enum UTF8Text {
    /// The text of `bytes`, or nil when they are not valid UTF-8. ASCII, the common case, skips
    /// the standard library's generic validation, whose metadata lookups showed in profiles (the
    /// agent's spool reads, the direct event scanner).
    @inlinable public static func decode(_ bytes: UnsafeBufferPointer<UInt8>) -> String? {
        for byte in bytes where byte >= 0x80 { return String(validating: bytes, as: UTF8.self) }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Whether `bytes` are valid UTF-8: exactly when ``decode(_:)`` gives a string, without
    /// making one for ASCII.
    @inlinable public static func isValid(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        for byte in bytes where byte >= 0x80 { return String(validating: bytes, as: UTF8.self) != nil }
        return true
    }
}
