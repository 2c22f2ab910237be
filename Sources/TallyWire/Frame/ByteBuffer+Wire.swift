import NIOCore
import TallyCore

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

    /// Writes an unsigned LEB128 varint (``LEB128``).
    @discardableResult
    mutating func writeVarint(_ value: UInt64) -> Int {
        var written = 0
        LEB128.encode(value) { written += writeInteger($0) }
        return written
    }

    /// Writes an unsigned LEB128 varint of up to 128 bits.
    mutating func writeVarint128(_ value: UInt128) {
        LEB128.encode(value) { writeInteger($0) }
    }

    /// Reads an unsigned LEB128 varint of at most 10 bytes that fits 64 bits, in its shortest
    /// form; nil otherwise.
    mutating func readVarint() -> UInt64? {
        guard let value = readVarint128(maxBytes: 10), value <= UInt128(UInt64.max) else { return nil }
        return UInt64(value)
    }

    /// Reads an unsigned LEB128 varint of at most `maxBytes` bytes (19 for 128 bits). A varint
    /// with a needless trailing zero byte (not the shortest form) is refused, so each value has
    /// exactly one encoding. On failure the reader index is left alone.
    mutating func readVarint128(maxBytes: Int = 19) -> UInt128? {
        let start = readerIndex
        guard let value = LEB128.decode(maxBytes: maxBytes, shortestOnly: true, { readInteger(as: UInt8.self) }) else {
            moveReaderIndex(to: start)
            return nil
        }
        return value
    }
}
