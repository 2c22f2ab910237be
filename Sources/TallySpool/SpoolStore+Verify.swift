import TallyCore

/// The spool's figures and its read-only checks.
extension SpoolStore {
    func stats() -> SpoolStats {
        let records = segments.reduce(0) { $0 + $1.records } - ackedRecordsInHead
        let recordBytes = segments.reduce(Int64(0)) { $0 + $1.size - Self.headerEnd }
        let ackedBytes = Int64(checkpoint.offset) - Self.headerEnd
        let oldest = segments.compactMap(\.minTimestamp).min().map(EventTime.init(microseconds:))
        return SpoolStats(
            events: records, bytesOnDisk: bytesOnDisk, backlogBytes: recordBytes - ackedBytes, segments: segments.count,
            oldestEventTime: oldest, quarantinedRegions: quarantine.count, missingSegments: quarantine.missingSegments,
            acknowledged: checkpoint, end: end, shipped: checkpoint > SpoolPosition(segment: 1, offset: UInt64(Self.headerEnd)),
            writeFailure: writeFailure?.description)
    }

    /// Walks every record of every segment, decoding each, and reports what is wrong; changes
    /// nothing (not even the quarantine).
    func verify() throws(SpoolError) -> SpoolVerification {
        var result = SpoolVerification()
        // What opening found about the files as a whole, and losses already on the books.
        result.problems = report.problems.filter { $0.kind == .missingSegment || $0.kind == .badCheckpoint }
        for region in try quarantine.regions(maxBytesPerRegion: 0) where region.isMissingSegment {
            if !result.problems.contains(where: { $0.kind == .missingSegment && $0.position == region.position }) {
                result.problems.append(SpoolCorruption(kind: .missingSegment, position: region.position, length: 0))
            }
        }
        for index in segments.indices {
            let id = segments[index].id
            let segmentPath = path(id)
            let fd = try ops.open(segmentPath, create: false, readOnly: true)
            defer { ops.close(fd) }
            result.segments += 1
            let size = index == segments.count - 1 ? readableEnd(index) : try ops.size(fd, path: segmentPath)
            result.bytes += size
            var header = [UInt8](repeating: 0, count: RecordFraming.segmentHeaderBytes)
            _ = try header.withMutableBytes { raw throws(SpoolError) in try ops.read(fd, into: raw, at: 0, path: segmentPath) }
            if !header.withUnsafeBytes({ RecordFraming.isValidSegmentHeader($0, segment: id) }) {
                result.problems.append(
                    SpoolCorruption(kind: .badSegmentHeader, position: SpoolPosition(segment: id, offset: 0), length: UInt64(Self.headerEnd)))
            }
            let scanner = SegmentScanner(ops: ops, fd: fd, path: segmentPath, from: Self.headerEnd, end: size, bufferBytes: options.readBufferBytes)
            while true {
                switch try scanner.next() {
                case .record(let offset, let payloadBytes):
                    do {
                        _ = try scanner.withPayload { payload throws(SpoolDecodingError) in try EventRecordCodec.decode(payload) }
                        result.records += 1
                    } catch {
                        result.problems.append(
                            SpoolCorruption(
                                kind: .undecodableRecord, position: SpoolPosition(segment: id, offset: UInt64(offset)),
                                length: UInt64(payloadBytes + RecordFraming.headerBytes)))
                    }
                    continue
                case .corrupt(let offset, let length):
                    result.problems.append(
                        SpoolCorruption(kind: .corruptRecord, position: SpoolPosition(segment: id, offset: UInt64(offset)), length: UInt64(length)))
                    continue
                case .tornTail(let offset):
                    result.problems.append(
                        SpoolCorruption(kind: .tornTail, position: SpoolPosition(segment: id, offset: UInt64(offset)), length: UInt64(size - offset)))
                    continue
                case .end:
                    break
                }
                break
            }
        }
        return result
    }

    func quarantined(maxBytesPerRegion: Int) throws(SpoolError) -> [QuarantinedRegion] {
        try quarantine.regions(maxBytesPerRegion: maxBytesPerRegion)
    }
}

extension SegmentScanner {
    /// The event time of the record `next()` returned last, read without decoding the rest.
    func withTimestamp() -> Int64? {
        try? withPayload { payload throws(SpoolDecodingError) in EventRecordCodec.timestamp(payload) }
    }
}
