import TallyCore

/// The spool's files and their bookkeeping, used from one thread at a time (the I/O thread, or
/// the opener before the thread starts). Every method is synchronous and may block on disk.
final class SpoolStore {
    static let lockName = "LOCK"
    static let headerEnd = Int64(RecordFraming.segmentHeaderBytes)

    let directory: String
    let ops: any SpoolFileOperations
    let options: SpoolOptions
    var readOnly: Bool { options.access == .readOnly }
    var lockFd: Int32?
    var segments: [SegmentInfo] = []
    var activeFd: Int32?
    var checkpoint: SpoolPosition
    var checkpointFile: CheckpointFile?
    /// The batch-sequence lease; nil on a read-only open.
    var sequenceLease: SequenceLease?
    /// The id of the segment to create when there is no active one (its creation failed, e.g.
    /// on a full disk, after the fully acknowledged active segment was retired).
    var nextSegmentID: UInt64?
    /// The last write that failed for lack of space (or another I/O error), until a write succeeds.
    var writeFailure: SpoolError?
    var ackedRecordsInHead = 0
    let quarantine: QuarantineFile
    var report = RecoveryReport()
    var readerFd: (segment: UInt64, fd: Int32)?
    var spans: [(segment: UInt64, from: Int64, to: Int64, records: Int)] = []
    /// Set when unsynced records were truncated away (a failed fsync): their appends must fail.
    var lostUnsynced = false
    /// Told the duration of every group-commit fsync, in nanoseconds (the agent's histogram).
    var syncObserver: (@Sendable (Int64) -> Void)?

    static func segmentName(_ id: UInt64) -> String {
        let digits = String(id)
        return "segment-" + String(repeating: "0", count: max(0, 20 - digits.count)) + digits + ".tsp"
    }

    static func segmentID(fromName name: String) -> UInt64? {
        guard name.hasPrefix("segment-"), name.hasSuffix(".tsp"), name.utf8.count == 32 else { return nil }
        return UInt64(name.dropFirst(8).dropLast(4))
    }

    func path(_ id: UInt64) -> String { directory + "/" + Self.segmentName(id) }

    /// Opens the spool: locks it, reads the checkpoint and recovers every segment (see FORMAT.md).
    init(directory: String, options: SpoolOptions, ops: any SpoolFileOperations) throws(SpoolError) {
        self.directory = directory
        self.options = options
        self.ops = ops
        let readOnly = options.access == .readOnly
        if !readOnly {
            try ops.makeDirectory(directory)
            let lockPath = directory + "/" + Self.lockName
            let fd = try ops.open(lockPath, create: true, readOnly: false)
            guard try ops.lock(fd, path: lockPath) else {
                ops.close(fd)
                throw .locked(directory: directory)
            }
            lockFd = fd
        }
        do {
            quarantine = try QuarantineFile(directory: directory, ops: ops, readOnly: readOnly)
        } catch {
            if let lockFd { ops.close(lockFd) }
            throw error
        }
        checkpoint = SpoolPosition(segment: 0, offset: UInt64(Self.headerEnd))
        do {
            let names = try ops.list(directory)
            let storedFile = Checkpoint.read(directory: directory, ops: ops)
            let plan = RecoveryPlan(
                names: names, stored: storedFile.newest?.position, checkpointFileExists: storedFile.exists,
                temporaryNames: [Checkpoint.temporaryName, SequenceLease.file.temporaryName])
            if !readOnly { checkpointFile = CheckpointFile(directory: directory, ops: ops, stored: storedFile) }
            try carryOut(plan)
            if segments.isEmpty, !readOnly {
                let id = plan.freshSegment
                do {
                    try createSegment(id)
                } catch where error.isOutOfSpace {
                    // Start anyway on a full disk: the first append creates it once there is room.
                    nextSegmentID = id
                    writeFailure = error
                }
            }
            let settled = plan.settle(segments: segments.map { ($0.id, $0.size) })
            if settled.movedToAnotherSegment { ackedRecordsInHead = 0 }
            if let past = settled.pastSegmentEnd { report.problems.append(SpoolCorruption(kind: .badCheckpoint, position: past, length: 0)) }
            checkpoint = settled.checkpoint
            report.missingSegments.sort()
            if !readOnly, report.problems.contains(where: { $0.kind == .tornTail }) || report.emptySegmentsRepaired > 0 || report.summariesWritten > 0 {
                try SlotFile.syncDirectory(directory, ops: ops)
            }
            if !readOnly {
                // Created once, or repaired when no slot is valid (then counted as a problem above).
                if !report.checkpointFound { try? checkpointFile?.write(checkpoint) }
                // Acknowledged data left in the active segment (an earlier version kept it for
                // ever): free it now.
                try? retireAcknowledgedActive(always: true)
                let lease = SequenceLease(
                    directory: directory, ops: ops,
                    spoolWasUsed: report.checkpointFound || report.recordsFound > 0 || !report.problems.isEmpty)
                report.sequenceRecovered = lease.recovered
                sequenceLease = lease
            }
        } catch {
            close()
            throw error
        }
    }

    func summaryPath(_ id: UInt64) -> String { directory + "/" + SegmentSummary.fileName(id) }

    /// Writes a sealed segment's summary. A summary only saves a scan, so failing to write one
    /// (e.g. a full disk) never fails the caller: a partial file is removed, and a damaged one
    /// would fail its CRC on the next open and be replaced.
    func writeSummary(_ summary: SegmentSummary) {
        do {
            try summary.write(directory: directory, ops: ops)
        } catch {
            try? ops.remove(summaryPath(summary.segment))
        }
    }

    /// Makes the file a fresh, empty segment: truncated, then its header, durably.
    func writeHeader(_ fd: Int32, id: UInt64, path: String) throws(SpoolError) {
        try ops.truncate(fd, to: 0, path: path)
        try RecordFraming.segmentHeader(id).withBytes { raw throws(SpoolError) in try ops.write(fd, raw, at: 0, path: path) }
        try ops.sync(fd, path: path)
    }

    func createSegment(_ id: UInt64) throws(SpoolError) {
        let segmentPath = path(id)
        let fd = try ops.open(segmentPath, create: true, readOnly: false)
        do {
            try writeHeader(fd, id: id, path: segmentPath)
            try SlotFile.syncDirectory(directory, ops: ops)
        } catch {
            ops.close(fd)
            try? ops.remove(segmentPath)
            throw error
        }
        segments.append(SegmentInfo(id: id, size: Self.headerEnd, syncedSize: Self.headerEnd, records: 0, syncedRecords: 0, minTimestamp: nil))
        activeFd = fd
    }

    // MARK: Appending

    var bytesOnDisk: Int64 { segments.reduce(0) { $0 + $1.size } }

    var fullError: SpoolError {
        options.fullPolicy == .block ? .full(retryAfter: options.retryAfter) : .rejectedFull
    }

    func mapped(_ error: SpoolError) -> SpoolError { error.isOutOfSpace ? fullError : error }

    /// Writes the batch's records after the last one, rolling to new segments at the size cap.
    /// Returns the position after the last record. On failure nothing of the batch remains in the
    /// active segment (records already in a sealed segment stay; the collector dedupes a retry).
    func append(_ batch: EncodedBatch) throws(SpoolError) -> SpoolPosition {
        do {
            return try appendOnce(batch)
        } catch where error.isFull {
            // Out of room, but the active segment may hold only acknowledged data (an idle
            // agent whose last batch was acked): free it and try once more.
            let before = segments.last?.id
            try? retireAcknowledgedActive(always: true)
            guard segments.last?.id != before else { throw error }
            return try appendOnce(batch)
        }
    }

    func appendOnce(_ batch: EncodedBatch) throws(SpoolError) -> SpoolPosition {
        guard !readOnly else { throw .readOnly }
        let rolls = batch.bytes.count / max(options.segmentBytes - RecordFraming.segmentHeaderBytes, 1) + 1
        if bytesOnDisk + Int64(batch.bytes.count + rolls * RecordFraming.segmentHeaderBytes) > Int64(options.maxSpoolBytes) {
            writeFailure = fullError
            throw fullError
        }
        if activeFd == nil, let id = nextSegmentID {
            do {
                try createSegment(id)
            } catch {
                writeFailure = mapped(error)
                throw mapped(error)
            }
            nextSegmentID = nil
        }
        var index = 0
        var byteStart = 0
        while index < batch.recordEnds.count {
            guard let fd = activeFd, var active = segments.last else { throw .closed }
            var last = index
            while last < batch.recordEnds.count, active.size + Int64(batch.recordEnds[last] - byteStart) <= Int64(options.segmentBytes) {
                last += 1
            }
            if last == index {
                if active.records > 0 || active.size > Self.headerEnd {
                    try roll()
                    continue
                }
                last = index + 1
            }
            let byteEnd = batch.recordEnds[last - 1]
            let segmentPath = path(active.id)
            do {
                try batch.bytes.withBytes { raw throws(SpoolError) in
                    try ops.write(fd, UnsafeRawBufferPointer(rebasing: raw[byteStart..<byteEnd]), at: active.size, path: segmentPath)
                }
            } catch {
                try? ops.truncate(fd, to: active.size, path: segmentPath)
                writeFailure = mapped(error)
                throw mapped(error)
            }
            active.size += Int64(byteEnd - byteStart)
            active.records += last - index
            for time in batch.timestamps[index..<last] { active.include(time: time) }
            segments[segments.count - 1] = active
            index = last
            byteStart = byteEnd
        }
        guard let active = segments.last else { throw .closed }
        writeFailure = nil
        return SpoolPosition(segment: active.id, offset: UInt64(active.size))
    }

    /// Makes every written record durable. A failed fsync truncates the unsynced records away
    /// (their appends have not returned and now fail) unless the policy is `never`.
    func sync() throws(SpoolError) {
        guard let fd = activeFd, var active = segments.last, active.size > active.syncedSize else { return }
        let segmentPath = path(active.id)
        let started = ContinuousClock.now
        defer {
            syncObserver?((ContinuousClock.now - started).nanoseconds)
        }
        do {
            try ops.sync(fd, path: segmentPath)
        } catch {
            if options.fsync != .never {
                try? ops.truncate(fd, to: active.syncedSize, path: segmentPath)
                active.size = active.syncedSize
                active.records = active.syncedRecords
                segments[segments.count - 1] = active
                lostUnsynced = true
            }
            throw mapped(error)
        }
        active.syncedSize = active.size
        active.syncedRecords = active.records
        segments[segments.count - 1] = active
    }

    /// Seals the active segment (fsync, then its summary) and starts the next one; creating it
    /// fsyncs the directory, which also makes the summary's directory entry durable.
    func roll() throws(SpoolError) {
        try sync()
        guard let last = segments.last else { throw .closed }
        writeSummary(last.summary)
        if let fd = activeFd { ops.close(fd) }
        activeFd = nil
        do {
            try createSegment(last.id + 1)
        } catch {
            // Keep appending to the old segment once the cause (e.g. ENOSPC) is gone; it is
            // active again, so its summary goes.
            try? ops.remove(summaryPath(last.id))
            activeFd = try ops.open(path(last.id), create: false, readOnly: false)
            throw mapped(error)
        }
    }

    /// The end of what readers may see: durable records only, unless the policy is `never`.
    func readableEnd(_ index: Int) -> Int64 {
        options.fsync == .never || index < segments.count - 1 ? segments[index].size : segments[index].syncedSize
    }

    var end: SpoolPosition {
        guard let last = segments.last else { return checkpoint }
        return SpoolPosition(segment: last.id, offset: UInt64(readableEnd(segments.count - 1)))
    }

}
