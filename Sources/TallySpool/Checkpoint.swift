/// The acknowledged position, kept in a ``SlotFile`` (FORMAT.md, "Checkpoint"), so that
/// recording an ack never needs new disk space: on a full disk the checkpoint still moves, and
/// the acknowledged segments behind it can be deleted.
///
/// Slot payload: u64 segment | u64 offset | u32 zero (32-byte slots, magic "TSCK"). The newest
/// valid slot (the greater position: positions only grow) is the checkpoint. No valid slot reads
/// as "no checkpoint".
enum Checkpoint {
    static let file = SlotFile(fileName: "checkpoint", magic: "TSCK", payloadBytes: 20)
    static var fileName: String { file.fileName }
    static var temporaryName: String { file.temporaryName }

    static func payload(_ position: SpoolPosition) -> [UInt8] {
        var out: [UInt8] = []
        out.appendLittleEndian(position.segment, bytes: 8)
        out.appendLittleEndian(position.offset, bytes: 8)
        out.appendLittleEndian(0, bytes: 4)
        return out
    }

    /// One slot holding `position`.
    static func encode(_ position: SpoolPosition) -> [UInt8] { file.encode(payload(position)) }

    static func decode(_ bytes: [UInt8]) -> SpoolPosition? { decode(bytes[...]) }

    static func decode(_ slot: ArraySlice<UInt8>) -> SpoolPosition? { file.decode(slot).map(position) }

    private static func position(_ payload: [UInt8]) -> SpoolPosition {
        payload.withUnsafeBytes { raw in
            SpoolPosition(segment: raw.loadLittleEndian(at: 0, bytes: 8), offset: raw.loadLittleEndian(at: 8, bytes: 8))
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
        let stored = file.read(directory: directory, ops: ops)
        let newest = stored.newest(position).map { (position: $0.value, slot: $0.slot) }
        return Stored(newest: newest, exists: stored.exists)
    }
}

/// The open checkpoint file of a writable spool.
struct CheckpointFile {
    private var writer: SlotFileWriter

    init(directory: String, ops: any SpoolFileOperations, stored: Checkpoint.Stored) {
        writer = SlotFileWriter(format: Checkpoint.file, directory: directory, ops: ops, exists: stored.exists, newestSlot: stored.newest?.slot)
    }

    /// Records `position` durably.
    mutating func write(_ position: SpoolPosition) throws(SpoolError) { try writer.write(Checkpoint.payload(position)) }

    mutating func close() { writer.close() }
}
