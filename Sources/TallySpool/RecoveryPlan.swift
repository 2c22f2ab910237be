/// What opening a spool does, decided from the directory listing and the stored checkpoint alone
/// (FORMAT.md, "Recovery"), with no I/O: ``SpoolStore`` carries the plan out (deletions on a
/// writable open only), recovers the ``live`` segments one by one, and then ``settle(segments:)``
/// decides where the checkpoint stands. So every recovery case is tested without a disk.
struct RecoveryPlan: Sendable, Hashable {
    static let headerEnd = UInt64(RecordFraming.segmentHeaderBytes)

    /// Transient files left by an interrupted first write of a slot file: deleted.
    var leftovers: [String] = []
    /// The checkpoint to recover from: the stored one, else the start of the oldest segment.
    var checkpoint: SpoolPosition
    /// Whether a valid checkpoint was stored.
    var checkpointFound: Bool
    /// The checkpoint file exists but none of its slots is valid.
    var checkpointDamaged: Bool
    /// Segments wholly before the checkpoint, whose deletion had been interrupted: deleted.
    var acknowledgedSegments: [UInt64] = []
    /// Numbers missing in the run from the checkpoint's segment to the newest: segments deleted
    /// behind the agent's back, with events never acknowledged.
    var missingSegments: [UInt64] = []
    /// Summaries that describe no sealed segment (none beside them, or beside the active one,
    /// left by a crash before the next segment existed): deleted.
    var staleSummaries: [String] = []
    /// The segments to recover, oldest first; the last is the active one.
    var live: [UInt64] = []
    /// The highest segment number in the directory.
    var highestSegment: UInt64?

    /// The plan for a directory holding `names`, whose checkpoint file holds `stored` (nil: no
    /// valid slot) and exists or not.
    init(names: [String], stored: SpoolPosition?, checkpointFileExists: Bool, temporaryNames: [String]) {
        leftovers = temporaryNames.filter(names.contains)
        let ids = names.compactMap(SpoolStore.segmentID(fromName:)).sorted()
        highestSegment = ids.last
        checkpointFound = stored != nil
        checkpointDamaged = checkpointFileExists && stored == nil
        let checkpoint = stored ?? SpoolPosition(segment: ids.first ?? 0, offset: Self.headerEnd)
        self.checkpoint = checkpoint
        acknowledgedSegments = ids.filter { $0 < checkpoint.segment }
        live = ids.filter { $0 >= checkpoint.segment }
        if let last = live.last, let first = stored.map({ min($0.segment, live[0]) }) ?? live.first, first < last {
            let present = Set(live)
            for id in first...last where !present.contains(id) {
                // A checkpoint at the very start of a segment that is not there is a segment that
                // was about to be created (a fully acknowledged one was retired).
                if id == checkpoint.segment && checkpoint.offset <= Self.headerEnd && id == first && !present.contains(id + 1) { continue }
                missingSegments.append(id)
            }
        }
        let sealed = Set(live.dropLast())
        staleSummaries = names.filter { name in SegmentSummary.segmentID(fromName: name).map { !sealed.contains($0) } ?? false }
    }

    /// The segment to create when no segment survived recovery: the checkpoint's own when it
    /// names the start of one not yet created (a retired active segment), otherwise a number
    /// never used before.
    var freshSegment: UInt64 {
        let fresh = checkpoint.offset <= Self.headerEnd ? checkpoint.segment : checkpoint.segment + 1
        return max(fresh, (highestSegment ?? 0) + 1, 1)
    }

    /// Where the checkpoint stands once the segments are recovered.
    struct Settled: Sendable, Hashable {
        var checkpoint: SpoolPosition
        /// The checkpoint moved to another segment: the acknowledged records counted in the old
        /// head segment no longer apply.
        var movedToAnotherSegment = false
        /// The stored checkpoint pointed past its segment's end (reported, then clamped).
        var pastSegmentEnd: SpoolPosition?
    }

    /// `segments`: the recovered segments (and a fresh one), oldest first, with their sizes.
    func settle(segments: [(id: UInt64, size: Int64)]) -> Settled {
        var settled = Settled(checkpoint: checkpoint)
        if let first = segments.first, first.id != checkpoint.segment {
            settled.checkpoint = SpoolPosition(segment: first.id, offset: Self.headerEnd)
            settled.movedToAnotherSegment = true
        }
        if let head = segments.first, settled.checkpoint.offset > UInt64(head.size) {
            settled.pastSegmentEnd = settled.checkpoint
            settled.checkpoint.offset = UInt64(head.size)
        }
        if settled.checkpoint.offset < Self.headerEnd { settled.checkpoint.offset = Self.headerEnd }
        return settled
    }
}
