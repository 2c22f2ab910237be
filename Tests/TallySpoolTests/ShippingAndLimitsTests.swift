import Foundation
import TallyTestSupport
import Testing
import TallyCore
@testable import TallySpool

@Suite struct ReaderAndAcknowledgeTests {
    /// The shipper reads spans (``Spool/readSpans(from:maxEvents:maxBytes:)``): the same events,
    /// batch boundaries and end positions as ``Spool/read(from:maxEvents:maxBytes:includingAcknowledged:)``,
    /// across segments and at both limits (events, bytes).
    @Test func spansReadsAreTheEventReads() async throws {
        let dir = TemporaryDirectory()
        let spool = try await Spool.open(directory: dir.spool, options: options { $0.segmentBytes = 2_000 })
        let events = (0..<300).map(sampleEvent)
        try await spool.append(events)
        #expect(dir.segmentFiles().count >= 2)
        for (maxEvents, maxBytes) in [(7, 1 << 20), (1_000, 300), (50, 1_000)] {
            var position = SpoolPosition(segment: 0, offset: 0)
            var read: [UsageEvent] = []
            while true {
                let batch = try await spool.read(from: position, maxEvents: maxEvents, maxBytes: maxBytes)
                let spans = try await spool.readSpans(from: position, maxEvents: maxEvents, maxBytes: maxBytes)
                #expect(spans.start == batch.start && spans.end == batch.end && spans.reachedLimit == batch.reachedLimit)
                #expect(spans.events.usageEvents == batch.events)
                if batch.events.isEmpty { break }
                read += batch.events
                position = batch.end
            }
            #expect(read == events, "\(maxEvents) events, \(maxBytes) bytes")
        }
        await spool.close()
    }

    @Test func readAndAcknowledgeAcrossRolloverWhileAppending() async throws {
        let dir = TemporaryDirectory()
        let spool = try await Spool.open(directory: dir.spool, options: options { $0.segmentBytes = 1_000 })
        let total = 400
        async let appended: Void = {
            for start in stride(from: 0, to: total, by: 8) {
                try await spool.append((start..<start + 8).map(sampleEvent))
            }
        }()
        var received: [UsageEvent] = []
        var position = try await spool.stats().acknowledged
        var maxSegments = 0
        var previousEvents = Int.max
        while received.count < total {
            let batch = try await spool.read(from: position, maxEvents: 7)
            received += batch.events
            position = batch.end
            maxSegments = max(maxSegments, dir.segmentFiles().count)
            if batch.events.isEmpty {
                await Task.yield()
            } else {
                try await spool.acknowledge(upTo: batch.end)
                let stats = try await spool.stats()
                #expect(stats.acknowledged == batch.end || stats.acknowledged.offset == UInt64(RecordFraming.segmentHeaderBytes))
                _ = previousEvents
                previousEvents = stats.events
            }
        }
        try await appended
        #expect(received == (0..<total).map(sampleEvent))
        #expect(maxSegments >= 2)
        let stats = try await spool.stats()
        #expect(stats.events == 0)
        #expect(stats.segments == 1, "wholly acknowledged segments are deleted")
        #expect(dir.segmentFiles().count == 1)
        await spool.close()
        let reopened = try await Spool.open(directory: dir.spool, options: options { $0.segmentBytes = 1_000 })
        #expect(try await readAll(reopened).events.isEmpty, "acknowledged events are not read again")
        await reopened.close()
    }

    @Test func readingNeverFreesSpace() async throws {
        let dir = TemporaryDirectory()
        let spool = try await Spool.open(directory: dir.spool, options: options { $0.segmentBytes = 500 })
        for index in 0..<40 { try await spool.append([sampleEvent(index)]) }
        let segments = dir.segmentFiles().count
        _ = try await readAll(spool)
        _ = try await readAll(spool)
        #expect(dir.segmentFiles().count == segments)
        #expect(try await spool.stats().events == 40)
        let half = try await spool.readFromAcknowledged(maxEvents: 20)
        try await spool.acknowledge(upTo: half.end)
        #expect(dir.segmentFiles().count < segments)
        let stats = try await spool.stats()
        #expect(stats.events == 20)
        #expect(try await readAll(spool).events == (20..<40).map(sampleEvent))
        await #expect(throws: SpoolError.self) {
            try await spool.acknowledge(upTo: SpoolPosition(segment: stats.end.segment, offset: stats.end.offset + 1))
        }
        await spool.close()
    }
}

@Suite struct GroupCommitTests {
    @Test(arguments: [FsyncPolicy.interval(.milliseconds(5)), .always])
    func concurrentAppendersShareFsyncsAndWaitForThem(policy: FsyncPolicy) async throws {
        let dir = TemporaryDirectory()
        let ops = TestFileOperations()
        let spool = try await Spool.open(directory: dir.spool, options: options { $0.fsync = policy }, fileOperations: ops)
        let syncsBefore = ops.segmentSyncs
        let appenders = 64
        let spoolPath = dir.spool
        let covered = try await withThrowingTaskGroup(of: Bool.self) { group in
            for index in 0..<appenders {
                group.addTask {
                    let end = try await spool.append([sampleEvent(index)])
                    return ops.durableEnd(end.segment, in: spoolPath) >= Int64(end.offset)
                }
            }
            return try await group.reduce(into: [Bool]()) { $0.append($1) }
        }
        let syncs = ops.segmentSyncs - syncsBefore
        #expect(covered.count == appenders)
        #expect(covered.allSatisfy { $0 }, "an append returned before the fsync that covers it")
        #expect(syncs >= 1)
        #expect(syncs < appenders, "\(syncs) fsyncs for \(appenders) appends")
        #expect(try await readAll(spool).events.count == appenders)
        await spool.close()
    }

    /// With an hour's window, an awaited append (an HTTP request's) completes at once when no other
    /// is on its way; one announced and not yet appended holds the sync until it ends. Without
    /// the rule the appends wait for the hour: the expectations fail at their deadline, and
    /// closing the spool (which syncs) lets the test end.
    @Test func anAwaitedAppendIsSyncedAtOnceUnlessAnotherIsOnItsWay() async throws {
        let dir = TemporaryDirectory()
        let ops = TestFileOperations()
        let spool = try await Spool.open(directory: dir.spool, options: options { $0.fsync = .interval(.seconds(3600)) }, fileOperations: ops)
        // The first append after a quiet spell is synced when written; the window starts there.
        try await spool.append([sampleEvent(0)])
        let syncedFirst = ops.segmentSyncs
        let alone = Task { try await spool.append([sampleEvent(1)], arrival: spool.arrival()) }
        #expect(await eventually(.seconds(20)) { ops.segmentSyncs == syncedFirst + 1 }, "an append alone waited for the window")

        let syncsBefore = ops.segmentSyncs
        let onItsWay = spool.arrival()
        let waiting = spool.arrival()
        let appended = Task { try await spool.append([sampleEvent(2)], arrival: waiting) }
        // Jobs run in order: once stats sees the event written, one more job ends a round after it.
        while try await spool.stats().events < 3 {}
        _ = try await spool.stats()
        #expect(ops.segmentSyncs == syncsBefore, "synced while another request was on its way")
        onItsWay.end()
        #expect(await eventually(.seconds(20)) { ops.segmentSyncs == syncsBefore + 1 }, "the end of the other did not release it")
        await spool.close()
        let first = try await alone.value
        let second = try await appended.value
        #expect(ops.durableEnd(first.segment, in: dir.spool) >= Int64(first.offset))
        #expect(ops.durableEnd(second.segment, in: dir.spool) >= Int64(second.offset))
    }

    @Test func neverPolicyDoesNotFsyncPerAppend() async throws {
        let dir = TemporaryDirectory()
        let ops = TestFileOperations()
        let spool = try await Spool.open(directory: dir.spool, options: options { $0.fsync = .never }, fileOperations: ops)
        let before = ops.segmentSyncs
        for index in 0..<20 { try await spool.append([sampleEvent(index)]) }
        #expect(ops.segmentSyncs == before)
        await spool.close()
        #expect(ops.segmentSyncs == before + 1, "close syncs")
    }
}

@Suite struct LimitTests {
    @Test func fullSpoolRefusesAndKeepsAcceptedData() async throws {
        let dir = TemporaryDirectory()
        let limited = options {
            $0.segmentBytes = 1_000
            $0.maxSpoolBytes = 3_000
            $0.retryAfter = .seconds(2)
        }
        let spool = try await Spool.open(directory: dir.spool, options: limited)
        var accepted: [UsageEvent] = []
        var refusal: SpoolError?
        for index in 0..<200 {
            do {
                try await spool.append([sampleEvent(index)])
                accepted.append(sampleEvent(index))
            } catch {
                refusal = error
                break
            }
        }
        #expect(refusal == .full(retryAfter: .seconds(2)))
        #expect(accepted.count > 10)
        #expect(try await spool.stats().bytesOnDisk <= 3_000)
        #expect(try await readAll(spool).events == accepted, "nothing accepted was dropped to make room")
        await #expect(throws: SpoolError.full(retryAfter: .seconds(2))) { try await spool.append([sampleEvent(500)]) }
        let all = try await readAll(spool)
        try await spool.acknowledge(upTo: all.end)
        try await spool.append([sampleEvent(500)])
        #expect(try await readAll(spool).events == [sampleEvent(500)])
        await spool.close()
    }

    @Test func rejectNewPolicy() async throws {
        let dir = TemporaryDirectory()
        let spool = try await Spool.open(
            directory: dir.spool,
            options: options {
                $0.maxSpoolBytes = 200
                $0.fullPolicy = .rejectNew
            })
        await #expect(throws: SpoolError.rejectedFull) {
            for index in 0..<100 { try await spool.append([sampleEvent(index)]) }
        }
        await spool.close()
    }

    @Test func enospcOnWriteLeavesTheSegmentValid() async throws {
        let dir = TemporaryDirectory()
        let ops = TestFileOperations()
        let spool = try await Spool.open(directory: dir.spool, options: options(), fileOperations: ops)
        try await spool.append((0..<3).map(sampleEvent))
        let sizeBefore = try await spool.stats().bytesOnDisk
        ops.state.withLock {
            $0.failWrites = ENOSPC
            $0.partialBytes = 30
        }
        await #expect(throws: SpoolError.full(retryAfter: .seconds(1))) { try await spool.append((3..<6).map(sampleEvent)) }
        ops.state.withLock { $0.failWrites = nil }
        #expect(try await spool.stats().bytesOnDisk == sizeBefore)
        let segment = dir.spool + "/" + dir.segmentFiles()[0]
        #expect(Int64(readBytes(segment).count) == sizeBefore, "the partial record was truncated away")
        try await spool.append([sampleEvent(6)])
        #expect(try await readAll(spool).events == [0, 1, 2, 6].map(sampleEvent))
        #expect(try await spool.verify().isClean)
        await spool.close()
    }

    @Test func enospcOnFsyncFailsTheUncoveredAppends() async throws {
        let dir = TemporaryDirectory()
        let ops = TestFileOperations()
        let spool = try await Spool.open(directory: dir.spool, options: options { $0.fsync = .always }, fileOperations: ops)
        try await spool.append((0..<3).map(sampleEvent))
        ops.state.withLock { $0.failSyncs = ENOSPC }
        await #expect(throws: SpoolError.full(retryAfter: .seconds(1))) { try await spool.append((3..<6).map(sampleEvent)) }
        ops.state.withLock { $0.failSyncs = nil }
        try await spool.append([sampleEvent(6)])
        #expect(try await readAll(spool).events == [0, 1, 2, 6].map(sampleEvent))
        await spool.close()
        let reopened = try await Spool.open(directory: dir.spool, options: options())
        #expect(reopened.recovery.problems.isEmpty)
        #expect(try await readAll(reopened).events == [0, 1, 2, 6].map(sampleEvent))
        await reopened.close()
    }

    @Test func oversizedEventIsRefused() async throws {
        let dir = TemporaryDirectory()
        let spool = try await Spool.open(directory: dir.spool, options: options())
        var huge = sampleEvent(1)
        huge.properties = Properties([("blob", String(repeating: "x", count: RecordFraming.maxPayloadBytes))])
        await #expect(throws: SpoolError.self) { try await spool.append([huge]) }
        await spool.close()
    }
}
