import TallyCore

/// The segment reader: batches for the shipper, oldest first, from durable records only.
extension SpoolStore {
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
        try read(SpoolBatch.self, from: position, maxEvents: maxEvents, maxBytes: maxBytes, includingAcknowledged: includingAcknowledged)
    }

    /// ``read(from:maxEvents:maxBytes:includingAcknowledged:)`` into a batch of `Batch`.
    func read<Batch: SpoolReadBatch>(
        _: Batch.Type, from position: SpoolPosition, maxEvents: Int, maxBytes: Int, includingAcknowledged: Bool = false
    ) throws(SpoolError) -> Batch {
        var at = includingAcknowledged ? position : max(position, checkpoint)
        var batch = Batch(at: at)
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
                        if batch.count >= maxEvents || (batch.count > 0 && bytes + payloadBytes + RecordFraming.headerBytes > maxBytes) {
                            batch.reachedLimit = true
                            break reading
                        }
                        spanRecords += 1
                        let recordPosition = SpoolPosition(segment: segments[index].id, offset: UInt64(offset))
                        do {
                            try scanner.withPayload { payload throws(SpoolDecodingError) in try batch.add(payload: payload, at: recordPosition) }
                            // A batch of 1,000 records is ~0.5 ms of this thread: whatever waits
                            // for the core (the API server beside the agent) runs in between.
                            YieldPoint.after(step: batch.count, every: 128)
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
            if batch.count >= maxEvents { break }
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
            let scanner = SegmentScanner(
                ops: ops, fd: try fd(forReading: index), path: path(id), from: at, end: to, bufferBytes: options.readBufferBytes)
            while true {
                let item = try scanner.next()
                if case .record = item { count += 1 }
                if item == .end { break }
            }
        }
        return count
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
