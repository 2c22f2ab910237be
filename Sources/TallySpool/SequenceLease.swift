import TallyCore

/// Batch sequence numbers that survive restarts and are never reused (SPEC.md §6), kept as spool
/// metadata beside the segments (`shipper.seq`), written through the spool's file-operations
/// seam on its I/O thread.
///
/// The agent leases sequences in blocks: before it hands out sequence `n` it has durably stored a
/// high-water mark above `n`. After a restart — even after kill -9 — it starts at the stored
/// mark, so a sequence already sent with some events is never sent with others. Gaps are allowed
/// by the protocol. The spool's lock guarantees one writer.
///
/// File: a ``SlotFile`` with 20-byte slots, magic "TSEQ", payload u64 high-water mark; the
/// greater valid mark counts. Extending a lease needs no new disk space (a full disk does not
/// stop shipping) and a torn write leaves the other slot intact.
///
/// A file that is missing beside a spool that was used before, or that has no valid slot, is
/// never guessed from: the lease continues from the current time in microseconds since the
/// epoch, which is above every mark the agent could have stored (marks grow by one per batch
/// and by whole blocks, far slower than the clock), and says so in ``recovered``.
struct SequenceLease {
    static let file = SlotFile(fileName: "shipper.seq", magic: "TSEQ", payloadBytes: 8)

    let block: UInt64
    private(set) var next: UInt64
    private(set) var leasedUpTo: UInt64
    /// Why the stored mark could not be used, when it could not.
    let recovered: String?
    private var writer: SlotFileWriter

    /// Reads the stored mark. `spoolWasUsed` tells a missing file on a fresh spool (start at 1)
    /// from a deleted one.
    init(directory: String, ops: any SpoolFileOperations, spoolWasUsed: Bool, block: UInt64 = 4_096, now: EventTime = .now()) {
        let stored = Self.file.read(directory: directory, ops: ops)
        let newest = stored.newest(Self.mark)
        let path = directory + "/" + Self.file.fileName
        let timeMark = UInt64(max(1, now.microseconds))
        self.block = block
        writer = SlotFileWriter(format: Self.file, directory: directory, ops: ops, exists: stored.exists, newestSlot: newest?.slot)
        switch (newest, stored.exists) {
        case (let newest?, _):
            next = newest.value
            recovered = nil
        case (nil, false) where !spoolWasUsed:
            next = 1
            recovered = nil
        case (nil, false):
            next = timeMark
            recovered = "\(path) is missing beside a spool that was used; continuing from the time-based sequence \(timeMark)"
        case (nil, true):
            next = timeMark
            recovered = "\(path) is damaged; continuing from the time-based sequence \(timeMark)"
        }
        leasedUpTo = next
    }

    /// The next sequence, extending the durable lease first when it is used up. On failure
    /// nothing is handed out and the lease is unchanged: the caller retries later.
    mutating func take() throws(SpoolError) -> UInt64 {
        if next >= leasedUpTo {
            let mark = next + block
            try writer.write(Self.payload(mark))
            leasedUpTo = mark
        }
        defer { next += 1 }
        return next
    }

    mutating func close() { writer.close() }

    static func payload(_ mark: UInt64) -> [UInt8] {
        var out: [UInt8] = []
        out.appendLittleEndian(mark, bytes: 8)
        return out
    }

    static func mark(_ payload: [UInt8]) -> UInt64 { payload.withUnsafeBytes { $0.loadLittleEndian(at: 0, bytes: 8) } }
}

/// What a spool's `shipper.seq` holds, for `tallyctl spool verify`.
public enum SequenceFileState: Sendable, Hashable {
    case missing
    case valid(mark: UInt64)
    case damaged

    /// Reads `shipper.seq` in the spool directory (blocking; changes nothing).
    public static func inspect(spoolDirectory: String, ops: any SpoolFileOperations = PosixFileOperations()) -> SequenceFileState {
        let stored = SequenceLease.file.read(directory: spoolDirectory, ops: ops)
        if let newest = stored.newest(SequenceLease.mark) { return .valid(mark: newest.value) }
        return stored.exists ? .damaged : .missing
    }
}
