import Foundation
import TallyCore
@testable import TallySpool
import Testing

/// A full disk, acknowledged data in the active segment, and segments lost behind the agent's
/// back (issue 9, items 2–4), through the file-operations seam. The same behaviour on a real
/// small file system is in `EndToEndTests/DiskFullTests`.
@Suite struct DiskFullAndGapsTests {
    /// On a full disk appends are refused (nothing kept), but acknowledging still works (the
    /// checkpoint is rewritten in place), and the acknowledged segment is freed.
    @Test func aFullDiskRefusesAppendsButAcknowledgesAndFrees() async throws {
        let directory = TemporaryDirectory()
        let ops = TestFileOperations()
        let spool = try await Spool.open(directory: directory.spool, options: options(), fileOperations: ops)
        try await spool.append((0..<50).map(sampleEvent))
        let batch = try await readAll(spool)
        #expect(batch.events.count == 50)
        let firstSegment = directory.segmentFiles()

        ops.diskFull = true
        await #expect(throws: SpoolError.full(retryAfter: .seconds(1))) { try await spool.append([sampleEvent(99)]) }
        #expect(try await spool.stats().writeFailure != nil, "health must not say writable")
        try await spool.acknowledge(upTo: batch.end)
        // The fully acknowledged segment is gone; its successor could not be created yet.
        #expect(!directory.segmentFiles().contains(firstSegment[0]))
        #expect(try await spool.stats().events == 0)
        await #expect(throws: SpoolError.full(retryAfter: .seconds(1))) { try await spool.append([sampleEvent(99)]) }

        ops.diskFull = false
        try await spool.append([sampleEvent(100)])
        #expect(try await spool.stats().writeFailure == nil)
        await spool.close()
        let reopened = try await Spool.open(directory: directory.spool, options: options())
        let left = try await readAll(reopened)
        #expect(left.events == [sampleEvent(100)])
        await reopened.close()
    }

    /// A spool opened on a full disk starts (recovery needs no new space) and says why it
    /// cannot take events.
    @Test func opensOnAFullDisk() async throws {
        let directory = TemporaryDirectory()
        let first = try await Spool.open(directory: directory.spool, options: options())
        try await first.append((0..<10).map(sampleEvent))
        await first.close()
        let ops = TestFileOperations()
        ops.diskFull = true
        let spool = try await Spool.open(directory: directory.spool, options: options(), fileOperations: ops)
        let batch = try await readAll(spool)
        #expect(batch.events.count == 10)
        try await spool.acknowledge(upTo: batch.end)
        await spool.close()
    }

    /// Acknowledged data in the active segment is freed: at once when there is enough of it,
    /// and in any case on the next open (an earlier version kept it for ever).
    @Test func acknowledgedActiveSegmentIsRetired() async throws {
        let directory = TemporaryDirectory()
        let spool = try await Spool.open(directory: directory.spool, options: options { $0.segmentBytes = 64 << 10 })
        // Under the threshold (a quarter of the segment): kept until the next open.
        try await spool.append((0..<20).map(sampleEvent))
        var batch = try await readAll(spool)
        try await spool.acknowledge(upTo: batch.end)
        #expect(directory.segmentFiles().count == 1)
        #expect(try await spool.stats().bytesOnDisk > SpoolStore.headerEnd)
        await spool.close()
        let reopened = try await Spool.open(directory: directory.spool, options: options { $0.segmentBytes = 64 << 10 })
        #expect(try await reopened.stats().bytesOnDisk == SpoolStore.headerEnd)
        #expect(directory.segmentFiles() == [SpoolStore.segmentName(2)])
        // Over the threshold: retired by the ack itself.
        try await reopened.append((0..<400).map(sampleEvent))
        batch = try await readAll(reopened)
        #expect(batch.events.count == 400)
        try await reopened.acknowledge(upTo: batch.end)
        #expect(try await reopened.stats().bytesOnDisk == SpoolStore.headerEnd)
        #expect(directory.segmentFiles() == [SpoolStore.segmentName(3)])
        // Appending and reading go on in the new segment; nothing old comes back.
        try await reopened.append([sampleEvent(7)])
        #expect(try await readAll(reopened).events == [sampleEvent(7)])
        await reopened.close()
        let third = try await Spool.open(directory: directory.spool, options: options { $0.segmentBytes = 64 << 10 })
        #expect(try await readAll(third).events == [sampleEvent(7)])
        #expect(third.recovery.missingSegments.isEmpty)
        await third.close()
    }

    /// Segment numbers run in sequence: a deleted or emptied segment between others is
    /// reported at open, recorded in the quarantine (so it stays on the books), counted in the
    /// stats and reported by verify.
    @Test func missingAndEmptiedSegmentsAreReportedAndAccounted() async throws {
        let directory = TemporaryDirectory()
        let small = options { $0.segmentBytes = 64 << 10 }
        let spool = try await Spool.open(directory: directory.spool, options: small)
        for round in 0..<20 { try await spool.append((0..<200).map { sampleEvent(round * 200 + $0) }) }
        await spool.close()
        let segments = directory.segmentFiles()
        #expect(segments.count >= 5)
        try FileManager.default.removeItem(atPath: directory.spool + "/" + segments[1])
        _ = FileManager.default.createFile(atPath: directory.spool + "/" + segments[3], contents: Data())

        // A read-only look (tallyctl) sees the gap and changes nothing.
        let look = try await Spool.open(directory: directory.spool, options: options { $0.access = .readOnly })
        #expect(look.recovery.missingSegments == [2, 4])
        let verification = try await look.verify()
        #expect(verification.problems.filter { $0.kind == .missingSegment }.map(\.position.segment) == [2, 4])
        await look.close()

        let reopened = try await Spool.open(directory: directory.spool, options: small)
        #expect(reopened.recovery.missingSegments == [2, 4])
        #expect(try await reopened.stats().missingSegments == 2)
        // The rest is still shipped.
        let rest = try await readAll(reopened)
        #expect(rest.events.count > 0 && rest.events.count < 4000)
        try await reopened.acknowledge(upTo: rest.end)
        await reopened.close()
        // After the gap has been acknowledged away, the loss is still on the books, once.
        let later = try await Spool.open(directory: directory.spool, options: small)
        #expect(later.recovery.missingSegments.isEmpty)
        #expect(try await later.stats().missingSegments == 2)
        #expect(try await later.verify().problems.filter { $0.kind == .missingSegment }.count == 2)
        await later.close()
    }

    /// The checkpoint is two slots written in place: the older slot survives a torn write of
    /// the newer one, and a 32-byte file of earlier versions still reads.
    @Test func checkpointSlots() throws {
        let directory = TemporaryDirectory()
        try FileManager.default.createDirectory(atPath: directory.spool, withIntermediateDirectories: true)
        let ops = PosixFileOperations()
        var file = CheckpointFile(directory: directory.spool, ops: ops, stored: Checkpoint.read(directory: directory.spool, ops: ops))
        let positions = (1...5).map { SpoolPosition(segment: 1, offset: UInt64(100 * $0)) }
        for position in positions { try file.write(position) }
        file.close()
        let path = directory.spool + "/" + Checkpoint.fileName
        #expect(Checkpoint.read(directory: directory.spool, ops: ops).newest?.position == positions[4])
        var bytes = readBytes(path)
        #expect(bytes.count == 64)
        let newestSlot = Checkpoint.read(directory: directory.spool, ops: ops).newest?.slot ?? -1
        bytes[newestSlot * 32 + 17] ^= 0xFF
        writeBytes(path, bytes)
        #expect(Checkpoint.read(directory: directory.spool, ops: ops).newest?.position == positions[3])
        writeBytes(path, Checkpoint.encode(positions[0]))
        #expect(Checkpoint.read(directory: directory.spool, ops: ops).newest?.position == positions[0])
        writeBytes(path, [UInt8](repeating: 7, count: 64))
        let damaged = Checkpoint.read(directory: directory.spool, ops: ops)
        #expect(damaged.exists && damaged.newest == nil)
    }
}
