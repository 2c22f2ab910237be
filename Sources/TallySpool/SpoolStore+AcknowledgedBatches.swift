import TallyCore

/// A batch the collector acknowledged: its sequence and the spool data it carried
/// (`start ..< end`). Kept in `acked-batches` so that `tallyctl spool inspect --id` can name the
/// batch that shipped an acknowledged event still on disk (the collector's trace names the same
/// agent and sequence).
public struct AcknowledgedBatch: Sendable, Hashable {
    public var sequence: UInt64
    public var start: SpoolPosition
    public var end: SpoolPosition

    public init(sequence: UInt64, start: SpoolPosition, end: SpoolPosition) {
        self.sequence = sequence
        self.start = start
        self.end = end
    }

    /// Of `batches` that shipped `position`, the one that started latest (the tightest: a batch
    /// cut right after a restart starts at the acknowledged position and may cover data an
    /// earlier batch shipped too); nil when none did.
    public static func covering(_ position: SpoolPosition, in batches: [AcknowledgedBatch]) -> AcknowledgedBatch? {
        batches.filter { $0.start <= position && position < $0.end }.max { $0.start < $1.start }
    }
}

/// `acked-batches`: 40-byte records, big-endian u64 sequence, start segment, start offset, end
/// segment, end offset, appended as acknowledgements free spool data. Informational only: nothing
/// the spool decides reads it, a failed append (a full disk) loses a record and nothing else, and
/// a torn last record is ignored. When it passes 1 MiB it is rewritten (atomically) with only the
/// records of data still on disk.
extension SpoolStore {
    static let acknowledgedBatchesName = "acked-batches"
    static let acknowledgedBatchBytes = 40
    static let acknowledgedBatchesLimit: Int64 = 1 << 20

    var acknowledgedBatchesPath: String { directory + "/" + Self.acknowledgedBatchesName }

    /// Appends `batches`; best effort (see the type's documentation).
    func recordAcknowledged(_ batches: [AcknowledgedBatch]) throws(SpoolError) {
        guard !readOnly else { throw .readOnly }
        guard !batches.isEmpty else { return }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(batches.count * Self.acknowledgedBatchBytes)
        for batch in batches { Self.append(batch, to: &bytes) }
        let path = acknowledgedBatchesPath
        let fd = try ops.open(path, create: true, readOnly: false)
        defer { ops.close(fd) }
        var size = try ops.size(fd, path: path)
        // A torn record (a crash mid-append) is overwritten.
        size -= size % Int64(Self.acknowledgedBatchBytes)
        try bytes.withUnsafeBytes { raw in Result { () throws(SpoolError) in try ops.write(fd, raw, at: size, path: path) } }.get()
        if size + Int64(bytes.count) > Self.acknowledgedBatchesLimit { try compactAcknowledged() }
    }

    /// Every recorded batch, oldest first.
    func acknowledgedBatches() throws(SpoolError) -> [AcknowledgedBatch] {
        let path = acknowledgedBatchesPath
        let fd: Int32
        do { fd = try ops.open(path, create: false, readOnly: true) } catch { return [] }
        defer { ops.close(fd) }
        let size = Int(try ops.size(fd, path: path))
        var buffer = [UInt8](repeating: 0, count: size)
        let read = try buffer.withUnsafeMutableBytes { raw in Result { () throws(SpoolError) in try ops.read(fd, into: raw, at: 0, path: path) } }
            .get()
        let records = read / Self.acknowledgedBatchBytes
        return buffer.withUnsafeBytes { raw in
            var reader = ByteReader(raw)
            return (0..<records).compactMap { _ in
                guard let sequence = reader.bigEndian(bytes: 8), let startSegment = reader.bigEndian(bytes: 8),
                    let startOffset = reader.bigEndian(bytes: 8), let endSegment = reader.bigEndian(bytes: 8),
                    let endOffset = reader.bigEndian(bytes: 8)
                else { return nil }
                return AcknowledgedBatch(
                    sequence: sequence, start: SpoolPosition(segment: startSegment, offset: startOffset),
                    end: SpoolPosition(segment: endSegment, offset: endOffset))
            }
        }
    }

    /// Rewrites the file with the records whose data is still on disk.
    private func compactAcknowledged() throws(SpoolError) {
        let oldest = segments.first?.id ?? checkpoint.segment
        let kept = try acknowledgedBatches().filter { $0.end.segment >= oldest }
        var bytes: [UInt8] = []
        for batch in kept { Self.append(batch, to: &bytes) }
        let temporary = acknowledgedBatchesPath + ".tmp"
        let fd = try ops.open(temporary, create: true, readOnly: false)
        do throws(SpoolError) {
            try ops.truncate(fd, to: 0, path: temporary)
            try bytes.withUnsafeBytes { raw in Result { () throws(SpoolError) in try ops.write(fd, raw, at: 0, path: temporary) } }.get()
            ops.close(fd)
        } catch {
            ops.close(fd)
            throw error
        }
        try ops.rename(temporary, to: acknowledgedBatchesPath)
    }

    private static func append(_ batch: AcknowledgedBatch, to bytes: inout [UInt8]) {
        for value in [batch.sequence, batch.start.segment, batch.start.offset, batch.end.segment, batch.end.offset] {
            bytes.appendBigEndian(value, bytes: 8)
        }
    }
}
