import TallyCore

/// The segment writer: appending records to the active segment (group-committed by the I/O
/// thread), sealing it at the size cap and creating the next one.
extension SpoolStore {
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
        } catch  where error.isFull {
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
}
