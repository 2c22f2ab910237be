import NIOCore

/// Reading and writing the primitive types of the Tally protocol: big-endian fixed-width
/// integers, `str16` (u16 length then UTF-8), and LEB128 varints. Every read returns nil when the
/// bytes run out or are invalid, and leaves the reader index alone in that case.
extension ByteBuffer {
    /// Writes a `str16`: a big-endian u16 byte length, then the UTF-8 bytes. Longer strings are
    /// refused by the callers before they get here.
    @discardableResult
    mutating func writeString16(_ text: String) -> Int {
        let count = writeInteger(UInt16(truncatingIfNeeded: text.utf8.count))
        return count + writeString(text)
    }

    /// Reads a `str16`, or nil if the bytes run out or are not UTF-8.
    mutating func readString16() -> String? {
        let start = readerIndex
        guard let length = readInteger(as: UInt16.self), let bytes = readBytes(length: Int(length)),
            let text = String(validating: bytes, as: UTF8.self)
        else {
            moveReaderIndex(to: start)
            return nil
        }
        return text
    }

    /// Writes an unsigned LEB128 varint.
    @discardableResult
    mutating func writeVarint(_ value: UInt64) -> Int {
        var value = value
        var written = 0
        while value >= 0x80 {
            written += writeInteger(UInt8(truncatingIfNeeded: value) | 0x80)
            value >>= 7
        }
        return written + writeInteger(UInt8(value))
    }

    /// Writes an unsigned LEB128 varint of up to 128 bits.
    mutating func writeVarint128(_ value: UInt128) {
        var value = value
        while value >= 0x80 {
            writeInteger(UInt8(truncatingIfNeeded: value) | 0x80)
            value >>= 7
        }
        writeInteger(UInt8(value))
    }

    /// Reads an unsigned LEB128 varint of at most 10 bytes that fits 64 bits, in its shortest
    /// form; nil otherwise.
    mutating func readVarint() -> UInt64? {
        guard let value = readVarint128(maxBytes: 10), value <= UInt128(UInt64.max) else { return nil }
        return UInt64(value)
    }

    /// Reads an unsigned LEB128 varint of at most `maxBytes` bytes (19 for 128 bits). A varint
    /// with a needless trailing zero byte (not the shortest form) is refused, so each value has
    /// exactly one encoding.
    mutating func readVarint128(maxBytes: Int = 19) -> UInt128? {
        let start = readerIndex
        var value: UInt128 = 0
        var shift: UInt128 = 0
        for index in 0..<maxBytes {
            guard let byte = readInteger(as: UInt8.self) else { break }
            if shift >= 128 || (shift > 0 && UInt128(byte & 0x7F) >> (128 - shift) != 0) { break }
            value |= UInt128(byte & 0x7F) << shift
            if byte & 0x80 == 0 {
                if byte == 0 && index > 0 { break }
                return value
            }
            shift += 7
        }
        moveReaderIndex(to: start)
        return nil
    }
}

/// Zigzag mapping of signed integers onto unsigned ones, so small magnitudes of either sign
/// become small varints.
enum ZigZag {
    static func encode(_ value: Int64) -> UInt64 { UInt64(bitPattern: (value << 1) ^ (value >> 63)) }
    static func decode(_ value: UInt64) -> Int64 { Int64(bitPattern: value >> 1) ^ -Int64(bitPattern: value & 1) }
    static func encode(_ value: Int128) -> UInt128 { UInt128(bitPattern: (value << 1) ^ (value >> 127)) }
    static func decode(_ value: UInt128) -> Int128 { Int128(bitPattern: value >> 1) ^ -Int128(bitPattern: value & 1) }
}
