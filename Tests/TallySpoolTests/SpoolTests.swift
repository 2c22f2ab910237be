import Foundation
import Testing
import TallyCore
@testable import TallySpool

@Suite struct SpoolBasicsTests {
    @Test func roundTripAcrossReopen() async throws {
        let dir = TemporaryDirectory()
        let events = (0..<250).map(sampleEvent)
        let spool = try await Spool.open(directory: dir.spool, options: options())
        try await spool.append(Array(events[0..<100]))
        try await spool.append(Array(events[100..<250]))
        #expect(try await readAll(spool).events == events)
        await spool.close()
        let reopened = try await Spool.open(directory: dir.spool, options: options())
        #expect(reopened.recovery.problems.isEmpty)
        #expect(reopened.recovery.recordsFound == 250)
        let read = try await readAll(reopened, chunk: 33)
        #expect(read.events == events)
        #expect(read.positions == read.positions.sorted())
        let stats = try await reopened.stats()
        #expect(stats.events == 250)
        #expect(stats.oldestEventTime == events[0].timestamp)
        #expect(stats.quarantinedRegions == 0)
        #expect(try await reopened.verify().records == 250)
        await reopened.close()
    }

    @Test func readsRespectMaxEventsAndMaxBytes() async throws {
        let dir = TemporaryDirectory()
        let spool = try await Spool.open(directory: dir.spool, options: options())
        try await spool.append((0..<100).map(sampleEvent))
        let byCount = try await spool.readFromAcknowledged(maxEvents: 10)
        #expect(byCount.events.count == 10)
        #expect(byCount.reachedLimit)
        let byBytes = try await spool.readFromAcknowledged(maxEvents: 1_000, maxBytes: 500)
        #expect(byBytes.events.count >= 1 && byBytes.events.count < 10)
        #expect(byBytes.reachedLimit, "the shipper cuts a batch stopped by its byte cap at once")
        let tiny = try await spool.readFromAcknowledged(maxEvents: 1_000, maxBytes: 1)
        #expect(tiny.events.count == 1)
        #expect(tiny.reachedLimit)
        let next = try await spool.read(from: byCount.end, maxEvents: 5)
        #expect(next.events == (10..<15).map(sampleEvent))
        // Up to the last record: the end of what is there, not a limit.
        let rest = try await spool.read(from: byCount.end, maxEvents: 1_000)
        #expect(rest.events.count == 90)
        #expect(!rest.reachedLimit)
        let exactly = try await spool.read(from: byCount.end, maxEvents: 90)
        #expect(exactly.events.count == 90)
        #expect(!exactly.reachedLimit, "no record after the last one read")
        await spool.close()
    }

    @Test func closedSpoolRefusesWork() async throws {
        let dir = TemporaryDirectory()
        let spool = try await Spool.open(directory: dir.spool, options: options())
        await spool.close()
        await #expect(throws: SpoolError.closed) { try await spool.append([sampleEvent(1)]) }
        await #expect(throws: SpoolError.closed) { try await spool.stats() }
    }

    @Test func lockContention() async throws {
        let dir = TemporaryDirectory()
        let first = try await Spool.open(directory: dir.spool, options: options())
        try await first.append([sampleEvent(1)])
        let ops = TestFileOperations()
        let start = ContinuousClock.now
        await #expect(throws: SpoolError.locked(directory: dir.spool)) {
            try await Spool.open(directory: dir.spool, options: options { $0.lockWait = .milliseconds(200) }, fileOperations: ops)
        }
        #expect(ContinuousClock.now - start >= .milliseconds(200), "a held lock is waited for, up to lockWait")
        #expect(ops.state.withLock { $0.lockRefusals } > 1, "and tried again meanwhile")
        let reader = try await Spool.open(directory: dir.spool, options: options { $0.access = .readOnly })
        #expect(try await readAll(reader).events == [sampleEvent(1)])
        await #expect(throws: SpoolError.readOnly) { try await reader.append([sampleEvent(2)]) }
        await #expect(throws: SpoolError.readOnly) { try await reader.acknowledge(upTo: SpoolPosition(segment: 1, offset: 16)) }
        await reader.close()
        await first.close()
        let second = try await Spool.open(directory: dir.spool, options: options())
        #expect(try await readAll(second).events == [sampleEvent(1)])
        await second.close()
        #expect(SpoolError.locked(directory: "/x").description.contains("locked"))
    }

    /// A lock let go during the wait is taken: the open neither fails nor needs a retry by its
    /// caller. (A child process being started holds a copy of the lock from its fork to its
    /// exec; a whole-suite run once failed a close-then-reopen test on exactly that.)
    @Test func anOpenWaitsForALockThatIsLetGo() async throws {
        let dir = TemporaryDirectory()
        let first = try await Spool.open(directory: dir.spool, options: options())
        try await first.append([sampleEvent(1)])
        let ops = TestFileOperations()
        let (refusals, refused) = AsyncStream.makeStream(of: Void.self)
        ops.state.withLock { $0.onLockRefused = { refused.yield() } }
        let second = Task {
            try await Spool.open(directory: dir.spool, options: options { $0.lockWait = .seconds(120) }, fileOperations: ops)
        }
        var iterator = refusals.makeAsyncIterator()
        _ = await iterator.next()  // the second open has found the lock held
        await first.close()
        let spool = try await second.value
        #expect(ops.state.withLock { $0.lockRefusals } >= 1)
        #expect(try await readAll(spool).events == [sampleEvent(1)])
        await spool.close()
    }

    @Test func readOnlyOpenChangesNothing() async throws {
        let dir = TemporaryDirectory()
        let spool = try await Spool.open(directory: dir.spool, options: options())
        try await spool.append((0..<3).map(sampleEvent))
        await spool.close()
        let segment = dir.spool + "/" + dir.segmentFiles()[0]
        let torn = readBytes(segment) + [9, 0, 0, 0, 1]
        writeBytes(segment, torn)
        let reader = try await Spool.open(directory: dir.spool, options: options { $0.access = .readOnly })
        #expect(reader.recovery.problems.map(\.kind) == [.tornTail])
        #expect(try await readAll(reader).events == (0..<3).map(sampleEvent))
        await reader.close()
        #expect(readBytes(segment) == torn)
    }
}

/// `acked-batches`: which batch shipped which acknowledged data, for `tallyctl spool inspect --id`.
@Suite struct AcknowledgedBatchesTests {
    /// Records come back in order across a reopen; a torn last record is dropped, and the next
    /// append overwrites it; past 1 MiB the file keeps only the records of data still on disk.
    @Test func recordsSurviveReopeningTornTailsAndCompaction() async throws {
        let directory = TemporaryDirectory()
        let spool = try await Spool.open(directory: directory.spool, options: options())
        try await spool.append((0..<10).map(sampleEvent))
        let read = try await spool.readFromAcknowledged(maxEvents: 10)
        let first = AcknowledgedBatch(sequence: 7, start: read.start, end: read.positions[5])
        let second = AcknowledgedBatch(sequence: 8, start: read.positions[5], end: read.end)
        try await spool.recordAcknowledged([first, second])
        #expect(try await spool.acknowledgedBatches() == [first, second])
        #expect(AcknowledgedBatch.covering(read.positions[6], in: [first, second])?.sequence == 8)
        #expect(AcknowledgedBatch.covering(read.end, in: [first, second]) == nil)
        await spool.close()

        let path = directory.spool + "/acked-batches"
        let handle = try #require(FileHandle(forUpdatingAtPath: path))
        try handle.seekToEnd()
        try handle.write(contentsOf: Data([1, 2, 3]))  // a crash mid-append
        try handle.close()
        let reopened = try await Spool.open(directory: directory.spool, options: options())
        #expect(try await reopened.acknowledgedBatches() == [first, second])
        // Records of data long deleted (segment 0 is before this spool's first segment), enough
        // to pass 1 MiB: the append that passes it compacts them away.
        let segment = read.start.segment
        #expect(segment > 0)
        let old = (0..<27_000).map {
            AcknowledgedBatch(sequence: UInt64(100 + $0), start: .init(segment: 0, offset: 0), end: .init(segment: 0, offset: 16))
        }
        try await reopened.recordAcknowledged(old)
        let third = AcknowledgedBatch(sequence: 9, start: read.end, end: SpoolPosition(segment: segment, offset: read.end.offset + 1))
        try await reopened.recordAcknowledged([third])
        #expect(try await reopened.acknowledgedBatches() == [first, second, third])
        #expect(try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int == 3 * 40)
        await reopened.close()
    }
}
