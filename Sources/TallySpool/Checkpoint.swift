import TallyCore

/// The acknowledged position, in a 32-byte file replaced atomically (FORMAT.md, "Checkpoint").
///
/// Layout: "TSCK", u32 version 1, u64 segment, u64 offset, u32 zero, u32 CRC-32C of the first 28
/// bytes; little-endian. A missing, short or corrupt file reads as "no checkpoint".
enum Checkpoint {
    static let fileName = "checkpoint"
    static let temporaryName = "checkpoint.tmp"
    static let byteCount = 32

    static func encode(_ position: SpoolPosition) -> [UInt8] {
        var out = Array("TSCK".utf8)
        RecordFraming.appendLE(1, bytes: 4, to: &out)
        RecordFraming.appendLE(position.segment, bytes: 8, to: &out)
        RecordFraming.appendLE(position.offset, bytes: 8, to: &out)
        RecordFraming.appendLE(0, bytes: 4, to: &out)
        RecordFraming.appendLE(UInt64(CRC32C.checksum(out)), bytes: 4, to: &out)
        return out
    }

    static func decode(_ bytes: [UInt8]) -> SpoolPosition? {
        guard bytes.count == byteCount, Array(bytes[0..<4]) == Array("TSCK".utf8) else { return nil }
        return bytes.withUnsafeBytes { raw -> SpoolPosition? in
            guard RecordFraming.readLE(raw, at: 4, bytes: 4) == 1,
                RecordFraming.readLE(raw, at: 28, bytes: 4) == UInt64(CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[0..<28])))
            else { return nil }
            return SpoolPosition(segment: RecordFraming.readLE(raw, at: 8, bytes: 8), offset: RecordFraming.readLE(raw, at: 16, bytes: 8))
        }
    }

    /// Reads the checkpoint; nil when there is none or it is unreadable.
    static func read(directory: String, ops: any SpoolFileOperations) -> SpoolPosition? {
        let path = directory + "/" + fileName
        guard let fd = try? ops.open(path, create: false, readOnly: true) else { return nil }
        defer { ops.close(fd) }
        var bytes = [UInt8](repeating: 0, count: byteCount + 1)
        let count = bytes.withUnsafeMutableBytes { raw in (try? ops.read(fd, into: raw, at: 0, path: path)) ?? 0 }
        return decode(Array(bytes[0..<count]))
    }

    /// Writes the checkpoint: temp file, fsync, rename over the old one, fsync the directory.
    static func write(_ position: SpoolPosition, directory: String, ops: any SpoolFileOperations) throws(SpoolError) {
        let temporary = directory + "/" + temporaryName
        let fd = try ops.open(temporary, create: true, readOnly: false)
        do throws(SpoolError) {
            try ops.truncate(fd, to: 0, path: temporary)
            try encode(position).withBytes { raw throws(SpoolError) in try ops.write(fd, raw, at: 0, path: temporary) }
            try ops.sync(fd, path: temporary)
        } catch {
            ops.close(fd)
            throw error
        }
        ops.close(fd)
        try ops.rename(temporary, to: directory + "/" + fileName)
        try syncDirectory(directory, ops: ops)
    }

    static func syncDirectory(_ directory: String, ops: any SpoolFileOperations) throws(SpoolError) {
        let fd = try ops.open(directory, create: false, readOnly: true)
        defer { ops.close(fd) }
        try ops.sync(fd, path: directory)
    }
}
