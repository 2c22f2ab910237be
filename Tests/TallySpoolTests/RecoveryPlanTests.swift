import Testing
@testable import TallySpool

/// Every recovery decision, from a directory listing and a stored checkpoint alone: no disk.
@Suite struct RecoveryPlanTests {
    let header = RecoveryPlan.headerEnd
    let temporary = [Checkpoint.temporaryName, SequenceLease.file.temporaryName]

    func segment(_ id: UInt64) -> String { SpoolStore.segmentName(id) }
    func summary(_ id: UInt64) -> String { SegmentSummary.fileName(id) }
    func plan(_ names: [String], stored: SpoolPosition?, exists: Bool? = nil) -> RecoveryPlan {
        RecoveryPlan(names: names, stored: stored, checkpointFileExists: exists ?? (stored != nil), temporaryNames: temporary)
    }

    @Test func aFreshDirectoryStartsAtSegmentOne() {
        let plan = plan(["LOCK", "quarantine.tsq"], stored: nil)
        #expect(plan.live.isEmpty && plan.missingSegments.isEmpty && plan.acknowledgedSegments.isEmpty)
        #expect(!plan.checkpointFound && !plan.checkpointDamaged)
        #expect(plan.freshSegment == 1)
        #expect(plan.settle(segments: [(1, Int64(header))]).checkpoint == SpoolPosition(segment: 1, offset: header))
    }

    @Test func segmentsBeforeTheCheckpointAreDeletedAndTheRestRecovered() {
        let plan = plan([segment(3), segment(4), segment(5), summary(3), summary(4)], stored: SpoolPosition(segment: 4, offset: 100))
        #expect(plan.acknowledgedSegments == [3])
        #expect(plan.live == [4, 5])
        #expect(plan.missingSegments.isEmpty)
        // The summary of 3 describes a deleted segment; 4's is kept (sealed).
        #expect(plan.staleSummaries == [summary(3)])
        #expect(plan.checkpoint == SpoolPosition(segment: 4, offset: 100))
    }

    @Test func aGapInTheNumberingIsALostSegment() {
        let plan = plan([segment(4), segment(7)], stored: SpoolPosition(segment: 4, offset: 100))
        #expect(plan.missingSegments == [5, 6])
        // A checkpoint's segment deleted with the ones after it is lost too.
        let gone = self.plan([segment(6)], stored: SpoolPosition(segment: 4, offset: 100))
        #expect(gone.missingSegments == [4, 5])
    }

    @Test func aCheckpointAtTheStartOfANotYetCreatedSegmentIsNoLoss() {
        // A fully acknowledged active segment 4 was retired; 5 was not created yet.
        let retired = plan([], stored: SpoolPosition(segment: 5, offset: header))
        #expect(retired.missingSegments.isEmpty && retired.freshSegment == 5)
        // ... or it was, and events were appended to it.
        let created = plan([segment(5)], stored: SpoolPosition(segment: 5, offset: header))
        #expect(created.missingSegments.isEmpty && created.live == [5])
        // But a segment after it means 5 existed (6 is only created when 5 is sealed): lost.
        let deleted = plan([segment(6)], stored: SpoolPosition(segment: 5, offset: header))
        #expect(deleted.missingSegments == [5])
        // A checkpoint inside 5 means 5 held events: lost too, even with nothing after it.
        let deletedMidway = plan([segment(7)], stored: SpoolPosition(segment: 5, offset: header + 40))
        #expect(deletedMidway.missingSegments == [5, 6])
    }

    @Test func aSummaryBesideTheActiveSegmentIsStale() {
        let plan = plan([segment(1), segment(2), summary(1), summary(2), summary(9)], stored: SpoolPosition(segment: 1, offset: header))
        #expect(plan.staleSummaries.sorted() == [summary(2), summary(9)])
    }

    @Test func aDamagedCheckpointStartsFromTheOldestSegment() {
        let plan = plan([segment(2), segment(3)], stored: nil, exists: true)
        #expect(plan.checkpointDamaged && !plan.checkpointFound)
        #expect(plan.checkpoint == SpoolPosition(segment: 2, offset: header))
        #expect(plan.live == [2, 3] && plan.acknowledgedSegments.isEmpty)
    }

    @Test func leftoversOfAnInterruptedFirstWriteAreDeleted() {
        let plan = plan([segment(1), Checkpoint.temporaryName, SequenceLease.file.temporaryName, "notes.txt"], stored: nil)
        #expect(plan.leftovers == temporary)
    }

    @Test func aFreshSegmentNeverReusesANumber() {
        // The checkpoint is inside segment 4, which is gone with nothing after it.
        #expect(plan([], stored: SpoolPosition(segment: 4, offset: 500)).freshSegment == 5)
        // A number seen in the directory is never created again.
        let plan = RecoveryPlan(names: [segment(9)], stored: nil, checkpointFileExists: false, temporaryNames: [])
        #expect(plan.freshSegment == 10)
    }

    @Test func settlingMovesOrClampsTheCheckpoint() {
        let plan = plan([segment(4), segment(5)], stored: SpoolPosition(segment: 4, offset: 900))
        // Segment 4 was emptied and removed during recovery: the checkpoint moves to 5's start.
        let moved = plan.settle(segments: [(5, 300)])
        #expect(moved.checkpoint == SpoolPosition(segment: 5, offset: header) && moved.movedToAnotherSegment)
        // Segment 4 is shorter than the checkpoint (a torn tail truncated): reported and clamped.
        let clamped = plan.settle(segments: [(4, 600), (5, 300)])
        #expect(clamped.checkpoint == SpoolPosition(segment: 4, offset: 600))
        #expect(clamped.pastSegmentEnd == SpoolPosition(segment: 4, offset: 900))
        let fine = plan.settle(segments: [(4, 1_000), (5, 300)])
        #expect(fine.checkpoint == SpoolPosition(segment: 4, offset: 900) && fine.pastSegmentEnd == nil && !fine.movedToAnotherSegment)
        // A checkpoint inside the header is raised to the first record.
        let low = self.plan([segment(4)], stored: SpoolPosition(segment: 4, offset: 3)).settle(segments: [(4, 100)])
        #expect(low.checkpoint == SpoolPosition(segment: 4, offset: header))
    }
}
