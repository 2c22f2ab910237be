import TallyCore

/// The ack checkpoint and spool metadata: recording what collectors acknowledged, deleting the
/// segments it covers, and leasing batch sequences.
extension SpoolStore {
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
        guard var lease = sequenceLease else { throw .readOnly }
        // Written back whether or not the take succeeds: a failed take leaves the lease as it was.
        defer { sequenceLease = lease }
        return try lease.take()
    }
}
