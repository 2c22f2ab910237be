import TallyCore

/// The framing of spool records and segment files (see FORMAT.md): what a valid record is.
///
/// A record is `u32 length | u32 crc | payload`, little-endian, where `length` counts the payload
/// bytes only and `crc` is the CRC-32C of the four length bytes followed by the payload. Covering
/// the length means a flipped length is caught like a flipped payload byte.
enum RecordFraming {
    static let headerBytes = 8
    /// The largest payload a record may carry; a larger length field is garbage by definition.
    static let maxPayloadBytes = 256 << 10

    /// Segment file header: "TSPS", format version 1, three zero bytes, u64 segment number.
    static let segmentMagic: [UInt8] = Array("TSPS".utf8)
    static let segmentVersion: UInt8 = 1
    static let segmentHeaderBytes = 16

    static func segmentHeader(_ segment: UInt64) -> [UInt8] {
        var out = segmentMagic
        out += [segmentVersion, 0, 0, 0]
        out.appendLittleEndian(segment, bytes: 8)
        return out
    }

    /// The format version of a segment header that is Tally's but newer than this code reads
    /// (its magic, reserved bytes and number intact), or nil.
    static func newerSegmentVersion(_ bytes: UnsafeRawBufferPointer, segment: UInt64) -> UInt8? {
        guard bytes.count >= segmentHeaderBytes, Array(bytes[0..<4]) == segmentMagic, bytes[4] > segmentVersion,
            bytes[5] == 0, bytes[6] == 0, bytes[7] == 0, bytes.loadLittleEndian(at: 8, bytes: 8) == segment
        else { return nil }
        return bytes[4]
    }

    static func isValidSegmentHeader(_ bytes: UnsafeRawBufferPointer, segment: UInt64) -> Bool {
        bytes.count >= segmentHeaderBytes && Array(bytes[0..<4]) == segmentMagic && bytes[4] == segmentVersion
            && bytes[5] == 0 && bytes[6] == 0 && bytes[7] == 0 && bytes.loadLittleEndian(at: 8, bytes: 8) == segment
    }

    /// Appends one framed record holding `event`'s payload to `out`.
    static func appendRecord(encoding body: (inout [UInt8]) -> Void, to out: inout [UInt8]) {
        let start = out.count
        out.append(contentsOf: [0, 0, 0, 0, 0, 0, 0, 0])
        body(&out)
        let length = out.count - start - headerBytes
        let lengthLE = UInt32(truncatingIfNeeded: length).littleEndian
        withUnsafeBytes(of: lengthLE) { raw in
            for i in 0..<4 { out[start + i] = raw[i] }
        }
        let crc = out.withUnsafeBytes { raw in
            var crc = CRC32C()
            crc.update(UnsafeRawBufferPointer(rebasing: raw[start..<(start + 4)]))
            crc.update(UnsafeRawBufferPointer(rebasing: raw[(start + headerBytes)...]))
            return crc.value
        }
        withUnsafeBytes(of: crc.littleEndian) { raw in
            for i in 0..<4 { out[start + 4 + i] = raw[i] }
        }
    }

    /// What the bytes at the start of `window` hold, with `fileRemaining` bytes left in the file
    /// from that point (the window may be shorter than the file, never longer than it).
    enum Candidate: Equatable {
        /// A whole record with a matching CRC; `payloadBytes` long.
        case valid(payloadBytes: Int)
        /// The header cannot be a record's (bad length) or the CRC does not match.
        case invalid
        /// The record would run past the end of the file: a torn write, or a garbage length.
        case incomplete
    }

    static func candidate(_ window: UnsafeRawBufferPointer, fileRemaining: Int) -> Candidate {
        if fileRemaining < headerBytes || window.count < headerBytes { return fileRemaining < headerBytes ? .incomplete : .invalid }
        let length = Int(window.loadLittleEndian(at: 0, bytes: 4))
        if length == 0 || length > maxPayloadBytes { return .invalid }
        if headerBytes + length > fileRemaining { return .incomplete }
        guard headerBytes + length <= window.count else { return .invalid }
        var crc = CRC32C()
        crc.update(UnsafeRawBufferPointer(rebasing: window[0..<4]))
        crc.update(UnsafeRawBufferPointer(rebasing: window[headerBytes..<(headerBytes + length)]))
        return crc.value == UInt32(window.loadLittleEndian(at: 4, bytes: 4)) ? .valid(payloadBytes: length) : .invalid
    }
}

extension Array where Element == UInt8 {
    /// `withUnsafeBytes` keeping the closure's typed error.
    func withBytes<T, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> T) throws(E) -> T {
        try withUnsafeBytes { raw in Result { () throws(E) -> T in try body(raw) } }.get()
    }

    /// `withUnsafeMutableBytes` keeping the closure's typed error.
    mutating func withMutableBytes<T, E: Error>(_ body: (UnsafeMutableRawBufferPointer) throws(E) -> T) throws(E) -> T {
        try withUnsafeMutableBytes { raw in Result { () throws(E) -> T in try body(raw) } }.get()
    }
}
