import TallyCore

/// Reading batches for the shipper and freeing what collectors acknowledged.
extension SpoolStore {
    // MARK: Reading and acknowledging

    func fd(forReading index: Int) throws(SpoolError) -> Int32 {
        let id = segments[index].id
        if index == segments.count - 1, let activeFd { return activeFd }
        if let readerFd, readerFd.segment == id { return readerFd.fd }
        if let readerFd { ops.close(readerFd.fd) }
        readerFd = nil
        let fd = try ops.open(path(id), create: false, readOnly: true)
        readerFd = (id, fd)
        return fd
    }

    /// Reads up to `maxEvents` events (and about `maxBytes` of records, at least one) from
    /// `position` on, skipping and quarantining corrupt records. Reads never free space.
    func read(from position: SpoolPosition, maxEvents: Int, maxBytes: Int, includingAcknowledged: Bool = false) throws(SpoolError) -> SpoolBatch {
        var at = includingAcknowledged ? position : max(position, checkpoint)
        var batch = SpoolBatch(start: at, end: at, events: [], positions: [], skippedCorruptRegions: 0)
        guard var index = segments.firstIndex(where: { $0.id >= at.segment }) else { return batch }
        if segments[index].id != at.segment { at = SpoolPosition(segment: segments[index].id, offset: UInt64(Self.headerEnd)) }
        at.offset = max(at.offset, UInt64(Self.headerEnd))
        batch.start = at
        var bytes = 0
        reading: while true {
            let end = readableEnd(index)
            guard at.offset <= UInt64(end) else {
                throw .invalidPosition(at, reason: "past the end of segment \(segments[index].id) (\(end) bytes)")
            }
            if at.offset < UInt64(end) {
                let fd = try fd(forReading: index)
                let scanner = SegmentScanner(
                    ops: ops, fd: fd, path: path(segments[index].id), from: Int64(at.offset), end: end,
                    bufferBytes: min(options.readBufferBytes, maxBytes))
                let spanStart = Int64(at.offset)
                var spanRecords = 0
                defer { remember(segment: segments[index].id, from: spanStart, to: Int64(at.offset), records: spanRecords) }
                while true {
                    let item = try scanner.next()
                    switch item {
                    case .record(let offset, let payloadBytes):
                        if batch.events.count >= maxEvents || (!batch.events.isEmpty && bytes + payloadBytes + RecordFraming.headerBytes > maxBytes) {
                            break reading
                        }
                        spanRecords += 1
                        let recordPosition = SpoolPosition(segment: segments[index].id, offset: UInt64(offset))
                        do {
                            let event = try scanner.withPayload { payload throws(SpoolDecodingError) in try EventRecordCodec.decode(payload) }
                            batch.events.append(event)
                            batch.positions.append(recordPosition)
                            bytes += payloadBytes + RecordFraming.headerBytes
                        } catch {
                            batch.skippedCorruptRegions += 1
                            if !readOnly {
                                try quarantine.add(
                                    segment: recordPosition.segment, offset: offset,
                                    length: Int64(payloadBytes + RecordFraming.headerBytes), from: scanner)
                            }
                        }
                        at.offset = UInt64(scanner.position)
                    case .corrupt(let offset, let length):
                        batch.skippedCorruptRegions += 1
                        if !readOnly { try quarantine.add(segment: segments[index].id, offset: offset, length: length, from: scanner) }
                        at.offset = UInt64(scanner.position)
                    case .tornTail, .end:
                        at.offset = UInt64(end)
                    }
                    if item == .end || at.offset == UInt64(end) { break }
                }
            }
            guard index + 1 < segments.count else { break }
            index += 1
            at = SpoolPosition(segment: segments[index].id, offset: UInt64(Self.headerEnd))
            if batch.events.count >= maxEvents { break }
        }
        batch.end = at
        return batch
    }

    func remember(segment: UInt64, from: Int64, to: Int64, records: Int) {
        guard to > from else { return }
        spans.append((segment, from, to, records))
        if spans.count > 512 { spans.removeFirst(spans.count - 256) }
    }

    /// Valid records in `[from, to)` of a segment: from the spans of recent reads when they
    /// chain, otherwise by scanning.
    func countRecords(_ index: Int, from: Int64, to: Int64) throws(SpoolError) -> Int {
        let id = segments[index].id
        var at = from
        var count = 0
        while at < to, let span = spans.last(where: { $0.segment == id && $0.from == at && $0.to <= to }) {
            count += span.records
            at = span.to
        }
        if at < to {
            let scanner = SegmentScanner(ops: ops, fd: try fd(forReading: index), path: path(id), from: at, end: to, bufferBytes: options.readBufferBytes)
            while true {
                let item = try scanner.next()
                if case .record = item { count += 1 }
                if item == .end { break }
            }
        }
        return count
    }

    /// Records that everything before `position` has been acknowledged by the collector: writes
    /// the checkpoint atomically, then deletes the segments that are wholly acknowledged.
    func acknowledge(upTo position: SpoolPosition) throws(SpoolError) {
        guard !readOnly else { throw .readOnly }
        guard position > checkpoint else { return }
        guard let found = segments.firstIndex(where: { $0.id >= position.segment }) else {
            throw .invalidPosition(position, reason: "after the last segment")
        }
        var index = found
        var target = segments[index].id == position.segment ? position : SpoolPosition(segment: segments[index].id, offset: UInt64(Self.headerEnd))
        guard target.offset <= UInt64(readableEnd(index)) else {
            throw .invalidPosition(position, reason: "past the durable end of segment \(target.segment)")
        }
        while target.offset == UInt64(readableEnd(index)), index + 1 < segments.count {
            index += 1
            target = SpoolPosition(segment: segments[index].id, offset: UInt64(Self.headerEnd))
        }
        let sameHead = target.segment == checkpoint.segment
        let from = sameHead ? Int64(checkpoint.offset) : Self.headerEnd
        let acked = (sameHead ? ackedRecordsInHead : 0) + (try countRecords(index, from: from, to: Int64(target.offset)))
        do throws(SpoolError) {
            guard checkpointFile != nil else { throw .readOnly }
            try checkpointFile?.write(target)
        } catch {
            writeFailure = error
            throw mapped(error)
        }
        if writeFailure.map({ !$0.isFull }) ?? false { writeFailure = nil }
        checkpoint = target
        ackedRecordsInHead = acked
        while let first = segments.first, first.id < target.segment {
            if let readerFd, readerFd.segment == first.id {
                ops.close(readerFd.fd)
                self.readerFd = nil
            }
            try? ops.remove(path(first.id))
            try? ops.remove(summaryPath(first.id))
            segments.removeFirst()
        }
        spans.removeAll { $0.segment < target.segment || ($0.segment == target.segment && $0.from < Int64(target.offset)) }
        try retireAcknowledgedActive(always: false)
    }

    /// The acknowledged bytes of the active segment worth retiring it for, when the disk is fine.
    private var retireThreshold: Int64 { Int64(min(options.segmentBytes / 4, 1 << 20)) }

    /// Deletes the active segment once every record in it is acknowledged, and starts the next:
    /// acknowledged data is otherwise freed only when a segment is sealed, and on a disk with
    /// less room than a segment the agent would refuse events for ever. Done when the segment
    /// holds at least ``retireThreshold`` bytes, when a write failed for space, or `always`.
    ///
    /// Order (each step survives a crash): the checkpoint moves to the start of the next
    /// segment number, the old file goes, the new one is created. If creating it fails (a full
    /// disk), the next append creates it.
    func retireAcknowledgedActive(always: Bool) throws(SpoolError) {
        guard !readOnly, let active = segments.last, segments.count == 1, active.records > 0,
            checkpoint == SpoolPosition(segment: active.id, offset: UInt64(active.size)), readableEnd(0) == active.size,
            always || writeFailure != nil || active.size - Self.headerEnd >= retireThreshold
        else { return }
        let next = SpoolPosition(segment: active.id + 1, offset: UInt64(Self.headerEnd))
        try checkpointFile?.write(next)
        checkpoint = next
        ackedRecordsInHead = 0
        if let activeFd { ops.close(activeFd) }
        activeFd = nil
        if let readerFd, readerFd.segment == active.id {
            ops.close(readerFd.fd)
            self.readerFd = nil
        }
        try? ops.remove(path(active.id))
        segments.removeAll()
        spans.removeAll()
        do {
            try createSegment(next.segment)
        } catch {
            nextSegmentID = next.segment
            writeFailure = mapped(error)
        }
        if writeFailure?.isFull ?? false, activeFd != nil { writeFailure = nil }
    }

    /// Syncs what was written, closes every file and releases the lock.
    func takeSequence() throws(SpoolError) -> UInt64 {
        guard sequenceLease != nil else { throw .readOnly }
        return try sequenceLease?.take() ?? 0
    }

    func close() {
        if !readOnly { try? sync() }
        if let activeFd { ops.close(activeFd) }
        activeFd = nil
        if let readerFd { ops.close(readerFd.fd) }
        readerFd = nil
        checkpointFile?.close()
        sequenceLease?.close()
        quarantine.close()
        if let lockFd { ops.close(lockFd) }
        lockFd = nil
    }
}
