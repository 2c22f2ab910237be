/// Walks the records of one segment file front to back through a bounded window, never holding
/// more than `bufferBytes + maxPayloadBytes + 8` bytes of the file in memory.
///
/// It tells valid records from corrupt regions and torn tails (FORMAT.md, "Recovery"):
/// - a record whose header and CRC check out is a record;
/// - otherwise the scanner resyncs: it tries every following byte offset for a valid record, and
///   everything before the first one it finds is one corrupt region. A damaged record's length is
///   never trusted to say where it ends: a valid record can lie inside the span it claims (a
///   flipped length bit), and a later append can put a valid record exactly where the length
///   points, which must not make an open swallow records an earlier open read;
/// - with no valid record anywhere after it, the rest of the file is a torn tail when the record
///   was incomplete (runs past the end of the file) or the rest is all zero bytes, and a corrupt
///   region otherwise.
final class SegmentScanner {
    enum Item: Equatable {
        case record(offset: Int64, payloadBytes: Int)
        case corrupt(offset: Int64, length: Int64)
        case tornTail(offset: Int64)
        case end
    }

    let ops: any SpoolFileOperations
    let fd: Int32
    let path: String
    /// The end of the data to scan (the file size, or the durable end of an active segment).
    let end: Int64
    private(set) var position: Int64
    private var window: [UInt8]
    private var windowStart: Int64 = 0
    private var windowCount = 0
    private var payloadRange: Range<Int> = 0..<0

    init(ops: any SpoolFileOperations, fd: Int32, path: String, from start: Int64, end: Int64, bufferBytes: Int) {
        self.ops = ops
        self.fd = fd
        self.path = path
        self.position = start
        self.end = end
        let capacity = max(bufferBytes, 64 << 10) + RecordFraming.maxPayloadBytes + RecordFraming.headerBytes
        self.window = [UInt8](repeating: 0, count: Int(min(Int64(capacity), max(end - start, 0))))
    }

    /// The next item; records advance `position` past themselves, corrupt regions past the region.
    func next() throws(SpoolError) -> Item {
        let start = position
        guard start < end else { return .end }
        let found = try candidate(at: start)
        if case .valid(let payloadBytes) = found {
            let base = Int(start - windowStart) + RecordFraming.headerBytes
            payloadRange = base..<(base + payloadBytes)
            position = start + Int64(RecordFraming.headerBytes + payloadBytes)
            return .record(offset: start, payloadBytes: payloadBytes)
        }
        var probe = start + 1
        while probe + Int64(RecordFraming.headerBytes) <= end {
            if try plausibleLength(at: probe) != nil, case .valid = try candidate(at: probe) {
                position = probe
                return .corrupt(offset: start, length: probe - start)
            }
            probe += 1
        }
        position = end
        if found == .incomplete { return .tornTail(offset: start) }
        if try isAllZero(from: start) { return .tornTail(offset: start) }
        return .corrupt(offset: start, length: end - start)
    }

    /// The payload of the record `next()` returned last.
    func withPayload<T>(_ body: (UnsafeRawBufferPointer) throws(SpoolDecodingError) -> T) throws(SpoolDecodingError) -> T {
        try window.withBytes { raw throws(SpoolDecodingError) in
            try body(UnsafeRawBufferPointer(rebasing: raw[payloadRange]))
        }
    }

    /// Hands the bytes of `[offset, offset + length)` to `body` in window-sized chunks.
    func forEachChunk(offset: Int64, length: Int64, _ body: (UnsafeRawBufferPointer) throws(SpoolError) -> Void) throws(SpoolError) {
        var at = offset
        let stop = min(offset + length, end)
        while at < stop {
            let available = try ensure(at, count: Int(min(stop - at, Int64(window.count))))
            if available == 0 { return }
            let base = Int(at - windowStart)
            try window.withBytes { raw throws(SpoolError) in
                try body(UnsafeRawBufferPointer(rebasing: raw[base..<(base + available)]))
            }
            at += Int64(available)
        }
    }

    private func plausibleLength(at offset: Int64) throws(SpoolError) -> Int? {
        guard try ensure(offset, count: RecordFraming.headerBytes) == RecordFraming.headerBytes else { return nil }
        let base = Int(offset - windowStart)
        let length = window.withUnsafeBytes { Int($0.loadLittleEndian(at: base, bytes: 4)) }
        return length > 0 && length <= RecordFraming.maxPayloadBytes ? length : nil
    }

    private func candidate(at offset: Int64) throws(SpoolError) -> RecordFraming.Candidate {
        let remaining = end - offset
        guard remaining >= Int64(RecordFraming.headerBytes) else { return .incomplete }
        guard let length = try plausibleLength(at: offset) else { return .invalid }
        let wanted = RecordFraming.headerBytes + length
        if Int64(wanted) > remaining { return .incomplete }
        let available = try ensure(offset, count: wanted)
        let base = Int(offset - windowStart)
        return window.withUnsafeBytes { raw in
            RecordFraming.candidate(UnsafeRawBufferPointer(rebasing: raw[base..<(base + available)]), fileRemaining: Int(remaining))
        }
    }

    private func isAllZero(from offset: Int64) throws(SpoolError) -> Bool {
        var zero = true
        try forEachChunk(offset: offset, length: end - offset) { chunk in
            if zero, chunk.contains(where: { $0 != 0 }) { zero = false }
        }
        return zero
    }

    /// Makes `[offset, offset + count)` (clamped to `end`) present in the window; returns how many
    /// of those bytes are there.
    private func ensure(_ offset: Int64, count: Int) throws(SpoolError) -> Int {
        let wanted = Int(min(Int64(count), end - offset))
        if offset >= windowStart, offset + Int64(wanted) <= windowStart + Int64(windowCount) { return wanted }
        let toRead = Int(min(Int64(window.count), end - offset))
        let got = try window.withMutableBytes { raw throws(SpoolError) in
            try ops.read(fd, into: UnsafeMutableRawBufferPointer(rebasing: raw[0..<toRead]), at: offset, path: path)
        }
        windowStart = offset
        windowCount = got
        return min(wanted, got)
    }
}
