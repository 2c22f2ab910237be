#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import TallyCore

/// Opening a spool, segment by segment (FORMAT.md, "Recovery"): summaries adopted, the rest
/// scanned, torn tails truncated, corrupt records quarantined, missing segments accounted for.
extension SpoolStore {
    /// Carries out the deletions of `plan` (on a writable open), accounts for what it found, and
    /// recovers its live segments.
    func carryOut(_ plan: RecoveryPlan) throws(SpoolError) {
        checkpoint = plan.checkpoint
        report.checkpointFound = plan.checkpointFound
        if plan.checkpointDamaged {
            report.problems.append(SpoolCorruption(kind: .badCheckpoint, position: SpoolPosition(segment: 0, offset: 0), length: 0))
        }
        for leftover in plan.leftovers where !readOnly { try ops.remove(directory + "/" + leftover) }
        for id in plan.acknowledgedSegments {
            if !readOnly { try ops.remove(path(id)) }
            report.ackedSegmentsDeleted += 1
        }
        for id in plan.missingSegments { try noteMissingSegment(id) }
        for name in plan.staleSummaries where !readOnly { try ops.remove(directory + "/" + name) }
        for (index, id) in plan.live.enumerated() {
            try recoverSegment(id, isLast: index == plan.live.count - 1, checkpoint: plan.checkpoint)
        }
    }

    /// Accounts for a segment that is gone or emptied: reported in the recovery report and, on
    /// a writable open, recorded in the quarantine file so that the loss stays on the books
    /// after the evidence (the numbering gap) has been acknowledged away.
    func noteMissingSegment(_ id: UInt64) throws(SpoolError) {
        report.missingSegments.append(id)
        report.problems.append(SpoolCorruption(kind: .missingSegment, position: SpoolPosition(segment: id, offset: 0), length: 0))
        if !readOnly { try quarantine.addMissingSegment(id) }
    }

    /// Recovers one segment. A sealed segment whose summary matches it (FORMAT.md, "Segment
    /// summary") is taken from its summary without being scanned; the active (last) segment and
    /// a sealed one without a valid summary are scanned, and the latter gets a new summary.
    func recoverSegment(_ id: UInt64, isLast: Bool, checkpoint: SpoolPosition) throws(SpoolError) {
        let segmentPath = path(id)
        let fd: Int32
        do {
            fd = try ops.open(segmentPath, create: false, readOnly: readOnly)
        } catch {
            // A read-only opener (`tallyctl spool status` beside a running agent) can find a
            // segment listed and then gone: the agent deleted it after an ack. It holds nothing
            // unacknowledged any more; the writer itself holds the lock, so this never happens
            // to it.
            if readOnly, case .io(_, _, let code) = error, code == ENOENT { return }
            throw error
        }
        var keepOpen = false
        defer { if !keepOpen { ops.close(fd) } }
        var size = try ops.size(fd, path: segmentPath)
        if size < Self.headerEnd {
            report.segmentsScanned += 1
            report.emptySegmentsRepaired += 1
            // Only the newest segment can be empty by a crash (before its header was durable);
            // an emptied older one lost its events outside the agent.
            if !isLast { try noteMissingSegment(id) }
            if readOnly { return }
            if !isLast {
                try ops.remove(segmentPath)
                try ops.remove(summaryPath(id))
                return
            }
            try writeHeader(fd, id: id, path: segmentPath)
            size = Self.headerEnd
        }
        var header = [UInt8](repeating: 0, count: RecordFraming.segmentHeaderBytes)
        _ = try header.withMutableBytes { raw throws(SpoolError) in try ops.read(fd, into: raw, at: 0, path: segmentPath) }
        if let version = header.withUnsafeBytes({ RecordFraming.newerSegmentVersion($0, segment: id) }) {
            throw .unsupportedFormat(path: segmentPath, version: version, supported: RecordFraming.segmentVersion)
        }
        let headerIsValid = header.withUnsafeBytes({ RecordFraming.isValidSegmentHeader($0, segment: id) })
        if !isLast, headerIsValid, let summary = SegmentSummary.read(id, directory: directory, ops: ops), summary.size == size {
            try adopt(summary, fd: fd, path: segmentPath, checkpoint: checkpoint)
            return
        }
        report.segmentsScanned += 1
        let scanner = SegmentScanner(ops: ops, fd: fd, path: segmentPath, from: Self.headerEnd, end: size, bufferBytes: options.readBufferBytes)
        if !headerIsValid {
            report.problems.append(
                SpoolCorruption(kind: .badSegmentHeader, position: SpoolPosition(segment: id, offset: 0), length: UInt64(Self.headerEnd)))
            if !readOnly {
                let headerScanner = SegmentScanner(ops: ops, fd: fd, path: segmentPath, from: 0, end: Self.headerEnd, bufferBytes: 0)
                try quarantine.add(segment: id, offset: 0, length: Self.headerEnd, from: headerScanner)
                try RecordFraming.segmentHeader(id).withBytes { raw throws(SpoolError) in try ops.write(fd, raw, at: 0, path: segmentPath) }
                try ops.sync(fd, path: segmentPath)
            }
        }
        var info = SegmentInfo(id: id, size: size, syncedSize: size, records: 0, syncedRecords: 0, minTimestamp: nil)
        var acked = 0
        var truncateAt: Int64?
        scan: while true {
            switch try scanner.next() {
            case .record(let offset, _):
                info.records += 1
                let isAcked = id == checkpoint.segment && UInt64(offset) < checkpoint.offset
                if isAcked { acked += 1 }
                if let time = scanner.withTimestamp() { info.include(time: time, unacknowledged: !isAcked) }
            case .corrupt(let offset, let length):
                report.problems.append(
                    SpoolCorruption(kind: .corruptRecord, position: SpoolPosition(segment: id, offset: UInt64(offset)), length: UInt64(length)))
                if !readOnly {
                    try quarantine.add(segment: id, offset: offset, length: length, from: scanner)
                    if offset + length == size { truncateAt = offset }
                }
            case .tornTail(let offset):
                report.problems.append(
                    SpoolCorruption(kind: .tornTail, position: SpoolPosition(segment: id, offset: UInt64(offset)), length: UInt64(size - offset)))
                truncateAt = offset
            case .end:
                break scan
            }
        }
        if let truncateAt, !readOnly {
            try ops.truncate(fd, to: truncateAt, path: segmentPath)
            try ops.sync(fd, path: segmentPath)
            info.size = truncateAt
            info.syncedSize = truncateAt
        }
        info.syncedRecords = info.records
        report.recordsFound += info.records
        if id == checkpoint.segment { ackedRecordsInHead = acked }
        segments.append(info)
        if isLast && !readOnly {
            keepOpen = true
            activeFd = fd
        } else if !readOnly {
            writeSummary(info.summary)
            report.summariesWritten += 1
        }
    }

    /// Takes a sealed segment's bookkeeping from its summary. When the checkpoint is inside it,
    /// the smaller side of the checkpoint is scanned to count the acknowledged records.
    func adopt(_ summary: SegmentSummary, fd: Int32, path segmentPath: String, checkpoint: SpoolPosition) throws(SpoolError) {
        var info = SegmentInfo(
            id: summary.segment, size: summary.size, syncedSize: summary.size, records: summary.records,
            syncedRecords: summary.records, minTimestamp: summary.oldest, allMin: summary.oldest, allMax: summary.newest)
        if summary.segment == checkpoint.segment {
            let boundary = min(max(Int64(checkpoint.offset), Self.headerEnd), summary.size)
            if boundary - Self.headerEnd <= summary.size - boundary {
                ackedRecordsInHead = try scanRecords(fd: fd, path: segmentPath, from: Self.headerEnd, to: boundary).records
            } else {
                let unacked = try scanRecords(fd: fd, path: segmentPath, from: boundary, to: summary.size)
                ackedRecordsInHead = max(0, summary.records - unacked.records)
                info.minTimestamp = unacked.oldest
            }
        }
        report.segmentsFromSummary += 1
        report.recordsFound += summary.records
        segments.append(info)
    }

    /// Valid records in `[from, to)` of a segment file, and the oldest event time among them.
    func scanRecords(fd: Int32, path segmentPath: String, from: Int64, to: Int64) throws(SpoolError) -> (records: Int, oldest: Int64?) {
        let scanner = SegmentScanner(ops: ops, fd: fd, path: segmentPath, from: from, end: to, bufferBytes: options.readBufferBytes)
        var records = 0
        var oldest: Int64?
        while true {
            let item = try scanner.next()
            if case .record = item {
                records += 1
                if let time = scanner.withTimestamp() { oldest = min(oldest ?? time, time) }
            }
            if item == .end { break }
        }
        return (records, oldest)
    }
}
