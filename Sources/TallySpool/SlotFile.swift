#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import TallyCore

/// A small durable value kept in two slots of one file that is written in place (FORMAT.md,
/// "Slot files"): the spool's checkpoint and the agent's batch-sequence lease. Updating one never
/// needs new disk space, and a torn write damages only the slot being written.
///
/// Slot layout, little-endian: 4-byte magic | u32 version = 1 | payload | u32 CRC-32C of the
/// slot's bytes before it. Slot 0 is the first `slotBytes`, slot 1 the next. The file is created
/// once (`NAME.tmp` with slot 0 and a zeroed slot 1, fsync, rename, fsync of the directory); every
/// later update overwrites the slot that does not hold the newest value and fsyncs the file. A
/// file of one slot (earlier versions) is slot 0 alone.
struct SlotFile: Sendable {
    let fileName: String
    let magic: [UInt8]
    let payloadBytes: Int

    init(fileName: String, magic: String, payloadBytes: Int) {
        self.fileName = fileName
        self.magic = Array(magic.utf8)
        self.payloadBytes = payloadBytes
    }

    var slotBytes: Int { payloadBytes + 12 }
    var temporaryName: String { fileName + ".tmp" }

    func encode(_ payload: [UInt8]) -> [UInt8] {
        var out = magic
        out.appendLittleEndian(1, bytes: 4)
        out += payload
        out.appendLittleEndian(UInt64(CRC32C.checksum(out)), bytes: 4)
        return out
    }

    /// The payload of one slot, or nil when the slot is not valid (magic, version or CRC).
    func decode(_ slot: ArraySlice<UInt8>) -> [UInt8]? {
        guard slot.count == slotBytes, slot.prefix(4).elementsEqual(magic) else { return nil }
        let bytes = Array(slot)
        return bytes.withUnsafeBytes { raw -> [UInt8]? in
            let crcAt = slotBytes - 4
            guard raw.loadLittleEndian(at: 4, bytes: 4) == 1,
                raw.loadLittleEndian(at: crcAt, bytes: 4) == UInt64(CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[0..<crcAt])))
            else { return nil }
            return Array(bytes[8..<crcAt])
        }
    }

    /// What the file holds: the valid slots' payloads, and whether the file exists.
    struct Stored {
        var slots: [(slot: Int, payload: [UInt8])]
        var exists: Bool

        /// The greatest value among the valid slots (both kinds of value only grow) and its slot.
        func newest<Value: Comparable>(_ value: ([UInt8]) -> Value) -> (value: Value, slot: Int)? {
            slots.map { (value: value($0.payload), slot: $0.slot) }.max { $0.value < $1.value }
        }
    }

    /// Reads both slots of the file in `directory` (a missing or unreadable file has none).
    func read(directory: String, ops: any SpoolFileOperations) -> Stored {
        let path = directory + "/" + fileName
        let fd: Int32
        do {
            fd = try ops.open(path, create: false, readOnly: true)
        } catch {
            // A file that is there but cannot be opened has no valid slot; only ENOENT is "missing".
            if case .io(_, _, let code) = error, code == ENOENT { return Stored(slots: [], exists: false) }
            return Stored(slots: [], exists: true)
        }
        defer { ops.close(fd) }
        var bytes = [UInt8](repeating: 0, count: 2 * slotBytes)
        let count = bytes.withUnsafeMutableBytes { raw in (try? ops.read(fd, into: raw, at: 0, path: path)) ?? 0 }
        var slots: [(slot: Int, payload: [UInt8])] = []
        for slot in 0..<2 where count >= (slot + 1) * slotBytes {
            if let payload = decode(bytes[(slot * slotBytes)..<((slot + 1) * slotBytes)]) { slots.append((slot, payload)) }
        }
        return Stored(slots: slots, exists: true)
    }

    /// Creates the file with `payload` in slot 0 and returns it open for in-place updates. The
    /// only write that needs new space; done once per file.
    func create(_ payload: [UInt8], directory: String, ops: any SpoolFileOperations) throws(SpoolError) -> Int32 {
        let temporary = directory + "/" + temporaryName
        let fd = try ops.open(temporary, create: true, readOnly: false)
        do throws(SpoolError) {
            try ops.truncate(fd, to: 0, path: temporary)
            try (encode(payload) + [UInt8](repeating: 0, count: slotBytes)).withBytes { raw throws(SpoolError) in
                try ops.write(fd, raw, at: 0, path: temporary)
            }
            try ops.sync(fd, path: temporary)
            try ops.rename(temporary, to: directory + "/" + fileName)
            try Self.syncDirectory(directory, ops: ops)
        } catch {
            ops.close(fd)
            try? ops.remove(temporary)
            throw error
        }
        return fd
    }

    /// Writes `payload` into `slot` of the open file and fsyncs it.
    func update(_ payload: [UInt8], slot: Int, fd: Int32, directory: String, ops: any SpoolFileOperations) throws(SpoolError) {
        let path = directory + "/" + fileName
        try encode(payload).withBytes { raw throws(SpoolError) in try ops.write(fd, raw, at: Int64(slot * slotBytes), path: path) }
        try ops.sync(fd, path: path)
    }

    static func syncDirectory(_ directory: String, ops: any SpoolFileOperations) throws(SpoolError) {
        let fd = try ops.open(directory, create: false, readOnly: true)
        defer { ops.close(fd) }
        try ops.sync(fd, path: directory)
    }
}

/// An open slot file of a writable spool: where the next update goes.
struct SlotFileWriter {
    let format: SlotFile
    let directory: String
    let ops: any SpoolFileOperations
    private var fd: Int32?
    /// The slot holding the newest value (the next update goes to the other).
    private var newestSlot: Int

    /// Opens the existing file for in-place updates; when there is none (or it cannot be opened
    /// now) the first ``write(_:)`` creates it. `newestSlot` is the slot of the newest valid value.
    init(format: SlotFile, directory: String, ops: any SpoolFileOperations, exists: Bool, newestSlot: Int?) {
        self.format = format
        self.directory = directory
        self.ops = ops
        self.newestSlot = newestSlot ?? 1
        fd = exists ? try? ops.open(directory + "/" + format.fileName, create: false, readOnly: false) : nil
    }

    /// Records `payload` durably.
    mutating func write(_ payload: [UInt8]) throws(SpoolError) {
        guard let fd else {
            fd = try format.create(payload, directory: directory, ops: ops)
            newestSlot = 0
            return
        }
        let slot = 1 - newestSlot
        try format.update(payload, slot: slot, fd: fd, directory: directory, ops: ops)
        newestSlot = slot
    }

    mutating func close() {
        if let fd { ops.close(fd) }
        fd = nil
    }
}
