import TallyCore

/// What a sealed segment holds, stored beside it so that opening the spool need not scan it
/// (FORMAT.md, "Segment summary").
///
/// Layout, 56 bytes, little-endian: "TSSM", u32 version 1, u64 segment, u64 segment file size,
/// u64 record count, i64 oldest event time µs, i64 newest event time µs, u32 zero, u32 CRC-32C of
/// bytes 0..<52. The times are zero when the count is zero. A summary is trusted only when its CRC
/// checks out, it names its own segment and its size equals the segment file's size; anything
/// else reads as "no summary", and the segment is scanned.
struct SegmentSummary: Equatable {
    static let fileSuffix = ".tsm"
    static let byteCount = 56

    var segment: UInt64
    /// The size of the segment file (header included) when it was sealed.
    var size: Int64
    /// Valid records in the segment.
    var records: Int
    var oldest: Int64?
    var newest: Int64?

    static func fileName(_ segment: UInt64) -> String {
        String(SpoolStore.segmentName(segment).dropLast(4)) + fileSuffix
    }

    static func segmentID(fromName name: String) -> UInt64? {
        guard name.hasSuffix(fileSuffix) else { return nil }
        return SpoolStore.segmentID(fromName: String(name.dropLast(fileSuffix.utf8.count)) + ".tsp")
    }

    func encode() -> [UInt8] {
        var out = Array("TSSM".utf8)
        out.appendLittleEndian(1, bytes: 4)
        out.appendLittleEndian(segment, bytes: 8)
        out.appendLittleEndian(UInt64(max(size, 0)), bytes: 8)
        out.appendLittleEndian(UInt64(max(records, 0)), bytes: 8)
        out.appendLittleEndian(UInt64(bitPattern: records > 0 ? oldest ?? 0 : 0), bytes: 8)
        out.appendLittleEndian(UInt64(bitPattern: records > 0 ? newest ?? 0 : 0), bytes: 8)
        out.appendLittleEndian(0, bytes: 4)
        out.appendLittleEndian(UInt64(CRC32C.checksum(out)), bytes: 4)
        return out
    }

    static func decode(_ bytes: [UInt8]) -> SegmentSummary? {
        guard bytes.count == byteCount, Array(bytes[0..<4]) == Array("TSSM".utf8) else { return nil }
        return bytes.withUnsafeBytes { raw -> SegmentSummary? in
            guard raw.loadLittleEndian(at: 4, bytes: 4) == 1, raw.loadLittleEndian(at: 48, bytes: 4) == 0,
                raw.loadLittleEndian(at: 52, bytes: 4) == UInt64(CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[0..<52])))
            else { return nil }
            let size = raw.loadLittleEndian(at: 16, bytes: 8)
            let records = raw.loadLittleEndian(at: 24, bytes: 8)
            guard size <= UInt64(Int64.max), records <= UInt64(Int.max), records <= size / UInt64(RecordFraming.headerBytes + 1) else { return nil }
            let oldest = Int64(bitPattern: raw.loadLittleEndian(at: 32, bytes: 8))
            let newest = Int64(bitPattern: raw.loadLittleEndian(at: 40, bytes: 8))
            return SegmentSummary(
                segment: raw.loadLittleEndian(at: 8, bytes: 8), size: Int64(size), records: Int(records),
                oldest: records > 0 ? oldest : nil, newest: records > 0 ? newest : nil)
        }
    }

    /// Reads the summary of `segment`; nil when there is none or it is damaged.
    static func read(_ segment: UInt64, directory: String, ops: any SpoolFileOperations) -> SegmentSummary? {
        let path = directory + "/" + fileName(segment)
        guard let fd = try? ops.open(path, create: false, readOnly: true) else { return nil }
        defer { ops.close(fd) }
        var bytes = [UInt8](repeating: 0, count: byteCount + 1)
        let count = bytes.withUnsafeMutableBytes { raw in (try? ops.read(fd, into: raw, at: 0, path: path)) ?? 0 }
        guard let summary = decode(Array(bytes[0..<count])), summary.segment == segment else { return nil }
        return summary
    }

    /// Writes the summary and fsyncs it. The directory entry is made durable by the caller's next
    /// directory fsync; a summary lost in a crash only costs one scan.
    func write(directory: String, ops: any SpoolFileOperations) throws(SpoolError) {
        let path = directory + "/" + Self.fileName(segment)
        let fd = try ops.open(path, create: true, readOnly: false)
        defer { ops.close(fd) }
        try ops.truncate(fd, to: 0, path: path)
        try encode().withBytes { raw throws(SpoolError) in try ops.write(fd, raw, at: 0, path: path) }
        try ops.sync(fd, path: path)
    }
}
