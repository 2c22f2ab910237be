import TallyCore

/// The acknowledged position, kept in two 32-byte slots of one file that is written in place
/// (FORMAT.md, "Checkpoint"), so that recording an ack never needs new disk space: on a full
/// disk the checkpoint still moves, and the acknowledged segments behind it can be deleted.
///
/// Slot layout: "TSCK", u32 version 1, u64 segment, u64 offset, u32 zero, u32 CRC-32C of the
/// first 28 bytes; little-endian. Slot 0 is bytes 0..<32, slot 1 bytes 32..<64. An update writes
/// the slot that does not hold the newest position, then fsyncs; a torn write damages only that
/// slot, and the other still holds the previous position. The newest valid slot (the greater
/// position: positions only grow) is the checkpoint. A 32-byte file (format of earlier
/// versions) is slot 0 alone. No valid slot reads as "no checkpoint".
enum Checkpoint {
    static let fileName = "checkpoint"
    static let temporaryName = "checkpoint.tmp"
    static let slotBytes = 32

    static func encode(_ position: SpoolPosition) -> [UInt8] {
        var out = Array("TSCK".utf8)
        RecordFraming.appendLE(1, bytes: 4, to: &out)
        RecordFraming.appendLE(position.segment, bytes: 8, to: &out)
        RecordFraming.appendLE(position.offset, bytes: 8, to: &out)
        RecordFraming.appendLE(0, bytes: 4, to: &out)
        RecordFraming.appendLE(UInt64(CRC32C.checksum(out)), bytes: 4, to: &out)
        return out
    }

    static func decode(_ bytes: [UInt8]) -> SpoolPosition? { decode(bytes[...]) }

    static func decode(_ bytes: ArraySlice<UInt8>) -> SpoolPosition? {
        guard bytes.count == slotBytes, bytes.prefix(4).elementsEqual("TSCK".utf8) else { return nil }
        return Array(bytes).withUnsafeBytes { raw -> SpoolPosition? in
            guard RecordFraming.readLE(raw, at: 4, bytes: 4) == 1,
                RecordFraming.readLE(raw, at: 28, bytes: 4) == UInt64(CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[0..<28])))
            else { return nil }
            return SpoolPosition(segment: RecordFraming.readLE(raw, at: 8, bytes: 8), offset: RecordFraming.readLE(raw, at: 16, bytes: 8))
        }
    }

    /// What the checkpoint file holds.
    struct Stored {
        /// The newest valid position and the slot it is in; nil when no slot is valid.
        var newest: (position: SpoolPosition, slot: Int)?
        /// Whether the file exists at all.
        var exists: Bool
    }

    /// Reads both slots.
    static func read(directory: String, ops: any SpoolFileOperations) -> Stored {
        let path = directory + "/" + fileName
        guard let fd = try? ops.open(path, create: false, readOnly: true) else { return Stored(newest: nil, exists: false) }
        defer { ops.close(fd) }
        var bytes = [UInt8](repeating: 0, count: 2 * slotBytes)
        let count = bytes.withUnsafeMutableBytes { raw in (try? ops.read(fd, into: raw, at: 0, path: path)) ?? 0 }
        var newest: (position: SpoolPosition, slot: Int)?
        for slot in 0..<2 where count >= (slot + 1) * slotBytes {
            guard let position = decode(bytes[(slot * slotBytes)..<((slot + 1) * slotBytes)]) else { continue }
            if newest == nil || position > (newest?.position ?? position) { newest = (position, slot) }
        }
        return Stored(newest: newest, exists: true)
    }

    /// Creates the file with `position` in slot 0 (temp file, fsync, rename, fsync of the
    /// directory) and returns it open for in-place updates. The only checkpoint write that
    /// needs new space; a spool does it once.
    static func create(_ position: SpoolPosition, directory: String, ops: any SpoolFileOperations) throws(SpoolError) -> Int32 {
        let temporary = directory + "/" + temporaryName
        let fd = try ops.open(temporary, create: true, readOnly: false)
        do throws(SpoolError) {
            try ops.truncate(fd, to: 0, path: temporary)
            try (encode(position) + [UInt8](repeating: 0, count: slotBytes)).withBytes { raw throws(SpoolError) in
                try ops.write(fd, raw, at: 0, path: temporary)
            }
            try ops.sync(fd, path: temporary)
            try ops.rename(temporary, to: directory + "/" + fileName)
            try syncDirectory(directory, ops: ops)
        } catch {
            ops.close(fd)
            try? ops.remove(temporary)
            throw error
        }
        return fd
    }

    /// Writes `position` into `slot` of the open file and fsyncs it: no new space is needed.
    static func update(_ position: SpoolPosition, slot: Int, fd: Int32, directory: String, ops: any SpoolFileOperations) throws(SpoolError) {
        let path = directory + "/" + fileName
        try encode(position).withBytes { raw throws(SpoolError) in try ops.write(fd, raw, at: Int64(slot * slotBytes), path: path) }
        try ops.sync(fd, path: path)
    }

    static func syncDirectory(_ directory: String, ops: any SpoolFileOperations) throws(SpoolError) {
        let fd = try ops.open(directory, create: false, readOnly: true)
        defer { ops.close(fd) }
        try ops.sync(fd, path: directory)
    }
}

/// The open checkpoint file of a writable spool: where the next update goes.
struct CheckpointFile {
    let directory: String
    let ops: any SpoolFileOperations
    private var fd: Int32?
    /// The slot holding the newest position (the next update goes to the other).
    private var newestSlot: Int

    /// Opens the existing file for in-place updates; when there is none (or it cannot be opened
    /// now) the first ``write(_:)`` creates it.
    init(directory: String, ops: any SpoolFileOperations, stored: Checkpoint.Stored) {
        self.directory = directory
        self.ops = ops
        newestSlot = stored.newest?.slot ?? 1
        fd = stored.exists ? try? ops.open(directory + "/" + Checkpoint.fileName, create: false, readOnly: false) : nil
    }

    /// Records `position` durably.
    mutating func write(_ position: SpoolPosition) throws(SpoolError) {
        guard let fd else {
            fd = try Checkpoint.create(position, directory: directory, ops: ops)
            newestSlot = 0
            return
        }
        let slot = 1 - newestSlot
        try Checkpoint.update(position, slot: slot, fd: fd, directory: directory, ops: ops)
        newestSlot = slot
    }

    mutating func close() {
        if let fd { ops.close(fd) }
        fd = nil
    }
}
