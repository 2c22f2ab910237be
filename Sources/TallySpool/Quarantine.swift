#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import TallyCore

/// A corrupt stretch of a segment, copied aside so that it can be examined later.
public struct QuarantinedRegion: Sendable, Hashable {
    /// Where the stretch starts in its segment.
    public var position: SpoolPosition
    /// Its full length in bytes.
    public var length: UInt64
    /// Its bytes, at most the cap passed to `quarantined(maxBytesPerRegion:)`.
    public var bytes: [UInt8]
    /// Whether this entry records a whole segment found missing or emptied (its events are
    /// lost; the entry keeps the loss on the books).
    public var isMissingSegment: Bool { length == 0 && position.offset == 0 }
}

/// The quarantine file: corrupt regions copied out of segments, each once (FORMAT.md).
///
/// Layout: "TSQ1" and four zero bytes, then entries: u64 segment, u64 offset, u32 length,
/// u32 CRC-32C of those 20 bytes, then `length` bytes copied from the segment. A torn entry at
/// the end (a crash while quarantining) is truncated away on open; the corrupt region is then
/// found and copied again.
final class QuarantineFile {
    static let fileName = "quarantine.tsq"
    static let fileHeader: [UInt8] = Array("TSQ1".utf8) + [0, 0, 0, 0]
    static let entryHeaderBytes = 24

    let ops: any SpoolFileOperations
    let path: String
    let fd: Int32?
    private(set) var size: Int64
    private(set) var entries: [(position: SpoolPosition, length: UInt64, dataOffset: Int64)] = []
    private var known: Set<SpoolPosition> = []

    var count: Int { entries.count }

    init(directory: String, ops: any SpoolFileOperations, readOnly: Bool) throws(SpoolError) {
        self.ops = ops
        self.path = directory + "/" + Self.fileName
        var fd: Int32?
        do {
            fd = try ops.open(path, create: !readOnly, readOnly: readOnly)
        } catch {
            // A read-only open of a spool without a quarantine file (ENOENT) has nothing quarantined.
            guard readOnly, case .io(_, _, let code) = error, code == ENOENT else { throw error }
            fd = nil
        }
        self.fd = fd
        self.size = 0
        guard let fd else { return }
        let fileSize = try ops.size(fd, path: path)
        if fileSize < Int64(Self.fileHeader.count) {
            if !readOnly {
                try ops.truncate(fd, to: 0, path: path)
                try Self.fileHeader.withBytes { raw throws(SpoolError) in try ops.write(fd, raw, at: 0, path: path) }
                try ops.sync(fd, path: path)
            }
            size = Int64(Self.fileHeader.count)
            return
        }
        var at = Int64(Self.fileHeader.count)
        var header = [UInt8](repeating: 0, count: Self.entryHeaderBytes)
        while at + Int64(Self.entryHeaderBytes) <= fileSize {
            let got = try header.withMutableBytes { raw throws(SpoolError) in try ops.read(fd, into: raw, at: at, path: path) }
            guard got == Self.entryHeaderBytes else { break }
            let parsed = header.withUnsafeBytes { raw -> (SpoolPosition, UInt64)? in
                guard raw.loadLittleEndian(at: 20, bytes: 4) == UInt64(CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[0..<20]))) else {
                    return nil
                }
                return (
                    SpoolPosition(segment: raw.loadLittleEndian(at: 0, bytes: 8), offset: raw.loadLittleEndian(at: 8, bytes: 8)),
                    raw.loadLittleEndian(at: 16, bytes: 4)
                )
            }
            guard let (position, length) = parsed, at + Int64(Self.entryHeaderBytes) + Int64(length) <= fileSize else { break }
            entries.append((position, length, at + Int64(Self.entryHeaderBytes)))
            known.insert(position)
            at += Int64(Self.entryHeaderBytes) + Int64(length)
        }
        if at < fileSize && !readOnly { try ops.truncate(fd, to: at, path: path) }
        size = at
    }

    func contains(_ position: SpoolPosition) -> Bool { known.contains(position) }

    /// Copies `[offset, offset + length)` of the scanned segment into the quarantine, durably,
    /// unless that region was quarantined before. Returns whether it was added.
    @discardableResult
    func add(segment: UInt64, offset: Int64, length: Int64, from scanner: SegmentScanner) throws(SpoolError) -> Bool {
        let position = SpoolPosition(segment: segment, offset: UInt64(offset))
        guard !known.contains(position) else { return false }
        guard let fd else { throw .readOnly }
        let stored = min(length, Int64(UInt32.max))
        var header: [UInt8] = []
        header.appendLittleEndian(segment, bytes: 8)
        header.appendLittleEndian(UInt64(offset), bytes: 8)
        header.appendLittleEndian(UInt64(stored), bytes: 4)
        header.appendLittleEndian(UInt64(CRC32C.checksum(header)), bytes: 4)
        let start = size
        do {
            try header.withBytes { raw throws(SpoolError) in try ops.write(fd, raw, at: start, path: path) }
            var at = start + Int64(Self.entryHeaderBytes)
            try scanner.forEachChunk(offset: offset, length: stored) { chunk throws(SpoolError) in
                try ops.write(fd, chunk, at: at, path: path)
                at += Int64(chunk.count)
            }
            try ops.sync(fd, path: path)
        } catch {
            try? ops.truncate(fd, to: start, path: path)
            throw error
        }
        entries.append((position, UInt64(stored), start + Int64(Self.entryHeaderBytes)))
        known.insert(position)
        size = start + Int64(Self.entryHeaderBytes) + stored
        return true
    }

    /// Records that segment `id` is gone (an entry of length 0 at offset 0), durably, once.
    func addMissingSegment(_ id: UInt64) throws(SpoolError) {
        let position = SpoolPosition(segment: id, offset: 0)
        guard !known.contains(position) else { return }
        guard let fd else { throw .readOnly }
        var header: [UInt8] = []
        header.appendLittleEndian(id, bytes: 8)
        header.appendLittleEndian(0, bytes: 8)
        header.appendLittleEndian(0, bytes: 4)
        header.appendLittleEndian(UInt64(CRC32C.checksum(header)), bytes: 4)
        let start = size
        do {
            try header.withBytes { raw throws(SpoolError) in try ops.write(fd, raw, at: start, path: path) }
            try ops.sync(fd, path: path)
        } catch {
            try? ops.truncate(fd, to: start, path: path)
            throw error
        }
        entries.append((position, 0, start + Int64(Self.entryHeaderBytes)))
        known.insert(position)
        size = start + Int64(Self.entryHeaderBytes)
    }

    /// Entries that record a missing segment.
    var missingSegments: Int { entries.count { $0.length == 0 && $0.position.offset == 0 } }

    func regions(maxBytesPerRegion: Int) throws(SpoolError) -> [QuarantinedRegion] {
        guard let fd else { return [] }
        var out: [QuarantinedRegion] = []
        for entry in entries {
            var bytes = [UInt8](repeating: 0, count: Int(min(UInt64(maxBytesPerRegion), entry.length)))
            let got = try bytes.withMutableBytes { raw throws(SpoolError) in try ops.read(fd, into: raw, at: entry.dataOffset, path: path) }
            out.append(QuarantinedRegion(position: entry.position, length: entry.length, bytes: Array(bytes[0..<got])))
        }
        return out
    }

    func close() { if let fd { ops.close(fd) } }
}
