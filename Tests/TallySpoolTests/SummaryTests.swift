import Foundation
import Testing
import TallyCore
@testable import TallySpool

/// A closed spool of `count` sample events over several small segments, with its stats as they
/// were before closing.
func multiSegmentSpool(_ count: Int = 200, acknowledging acked: Int = 0) async throws -> (TemporaryDirectory, SpoolStats, [SpoolPosition]) {
    let dir = TemporaryDirectory()
    let spool = try await Spool.open(directory: dir.spool, options: smallSegments)
    try await spool.append((0..<count).map(sampleEvent))
    let positions = try await readAll(spool).positions
    if acked > 0 { try await spool.acknowledge(upTo: positions[acked]) }
    let stats = try await spool.stats()
    await spool.close()
    return (dir, stats, positions)
}

let smallSegments = options { $0.segmentBytes = 2_048 }

extension TemporaryDirectory {
    func summaryFiles() -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: spool)) ?? []).filter { $0.hasSuffix(SegmentSummary.fileSuffix) }.sorted()
    }
    func segmentPath(_ name: String) -> String { spool + "/" + name }
}

@Suite struct SegmentSummaryTests {
    @Test func summaryRoundTripsAndRefusesDamage() {
        let summary = SegmentSummary(segment: 7, size: 65_000, records: 812, oldest: -5, newest: 1_776_081_600_000_000)
        let bytes = summary.encode()
        #expect(bytes.count == SegmentSummary.byteCount)
        #expect(SegmentSummary.decode(bytes) == summary)
        for index in bytes.indices {
            var damaged = bytes
            damaged[index] ^= 0x01
            #expect(SegmentSummary.decode(damaged) == nil, "flip at \(index)")
        }
        #expect(SegmentSummary.decode(Array(bytes.dropLast())) == nil)
        let empty = SegmentSummary(segment: 1, size: 16, records: 0, oldest: nil, newest: nil)
        #expect(SegmentSummary.decode(empty.encode()) == empty)
        #expect(SegmentSummary.segmentID(fromName: SegmentSummary.fileName(42)) == 42)
    }

    @Test func sealedSegmentsAreTakenFromTheirSummaries() async throws {
        let (dir, before, _) = try await multiSegmentSpool()
        let segments = dir.segmentFiles()
        #expect(segments.count >= 5)
        #expect(dir.summaryFiles().count == segments.count - 1, "every sealed segment has a summary, the active one none")
        let counting = TestFileOperations()
        let spool = try await Spool.open(directory: dir.spool, options: smallSegments, fileOperations: counting)
        #expect(spool.recovery.segmentsScanned == 1)
        #expect(spool.recovery.segmentsFromSummary == segments.count - 1)
        #expect(spool.recovery.recordsFound == 200)
        for name in segments.dropLast() {
            #expect(counting.bytesRead(dir.segmentPath(name)) == RecordFraming.segmentHeaderBytes, "\(name) was scanned")
        }
        let last = try #require(segments.last)
        #expect(counting.bytesRead(dir.segmentPath(last)) == readBytes(dir.segmentPath(last)).count)
        #expect(try await spool.stats() == before)
        #expect(try await readAll(spool).events == (0..<200).map(sampleEvent))
        #expect(try await spool.verify().isClean)
        await spool.close()
    }

    /// The head segment's acknowledged records are counted by scanning the smaller side of the
    /// checkpoint: stats stay exact either way.
    @Test(arguments: [3, 18])
    func checkpointInsideASealedSegment(acked: Int) async throws {
        let (dir, before, positions) = try await multiSegmentSpool(acknowledging: acked)
        #expect(positions[acked].segment == positions[0].segment, "the checkpoint is inside the first segment")
        #expect(before.events == 200 - acked)
        let counting = TestFileOperations()
        let spool = try await Spool.open(directory: dir.spool, options: smallSegments, fileOperations: counting)
        #expect(spool.recovery.segmentsScanned == 1)
        let stats = try await spool.stats()
        #expect(stats.events == before.events)
        #expect(stats.backlogBytes == before.backlogBytes)
        let oldest = try #require(stats.oldestEventTime)
        #expect(oldest <= sampleEvent(acked).timestamp, "a lower bound at worst")
        let head = dir.segmentPath(SpoolStore.segmentName(positions[0].segment))
        #expect(counting.bytesRead(head) <= readBytes(head).count / 2 + RecordFraming.segmentHeaderBytes, "only the smaller side was scanned")
        #expect(try await readAll(spool).events == (acked..<200).map(sampleEvent))
        await spool.close()
    }

    enum SummaryDamage: CaseIterable { case missing, flippedByte, truncated, wrongSize }

    @Test(arguments: SummaryDamage.allCases)
    func damagedOrMissingSummaryMeansAScanAndANewSummary(damage: SummaryDamage) async throws {
        let (dir, before, _) = try await multiSegmentSpool()
        let segments = dir.segmentFiles()
        let victimID = try #require(SpoolStore.segmentID(fromName: segments[2]))
        let summaryPath = dir.spool + "/" + SegmentSummary.fileName(victimID)
        let original = readBytes(summaryPath)
        let decoded = try #require(SegmentSummary.decode(original))
        switch damage {
        case .missing: try FileManager.default.removeItem(atPath: summaryPath)
        case .flippedByte:
            var bytes = original
            bytes[26] ^= 0x40
            writeBytes(summaryPath, bytes)
        case .truncated: writeBytes(summaryPath, Array(original[0..<30]))
        case .wrongSize:
            var lying = decoded
            lying.size += 9
            writeBytes(summaryPath, lying.encode())
        }
        let counting = TestFileOperations()
        let spool = try await Spool.open(directory: dir.spool, options: smallSegments, fileOperations: counting)
        #expect(spool.recovery.segmentsScanned == 2)
        #expect(spool.recovery.summariesWritten == 1)
        #expect(counting.bytesRead(dir.segmentPath(segments[2])) >= readBytes(dir.segmentPath(segments[2])).count)
        #expect(try await spool.stats() == before)
        #expect(try await readAll(spool).events == (0..<200).map(sampleEvent))
        await spool.close()
        #expect(readBytes(summaryPath) == original, "the summary was rewritten")
        let again = try await Spool.open(directory: dir.spool, options: smallSegments)
        #expect(again.recovery.segmentsScanned == 1)
        await again.close()
    }

    @Test func readOnlyOpenTrustsSummariesAndWritesNone() async throws {
        let (dir, before, _) = try await multiSegmentSpool()
        let segments = dir.segmentFiles()
        let victimID = try #require(SpoolStore.segmentID(fromName: segments[1]))
        try FileManager.default.removeItem(atPath: dir.spool + "/" + SegmentSummary.fileName(victimID))
        let reader = try await Spool.open(directory: dir.spool, options: options { $0.access = .readOnly })
        #expect(reader.recovery.segmentsScanned == 2)
        #expect(reader.recovery.summariesWritten == 0)
        #expect(try await reader.stats() == before)
        await reader.close()
        #expect(dir.summaryFiles().count == segments.count - 2)
    }

    @Test func tornTailOfTheActiveSegmentIsStillRepaired() async throws {
        let (dir, _, positions) = try await multiSegmentSpool()
        let last = try #require(positions.last)
        let path = dir.segmentPath(SpoolStore.segmentName(last.segment))
        writeBytes(path, Array(readBytes(path)[0..<Int(last.offset) + 11]))
        let spool = try await Spool.open(directory: dir.spool, options: smallSegments)
        #expect(spool.recovery.problems.map(\.kind) == [.tornTail])
        #expect(spool.recovery.problems.first?.position == last)
        #expect(try await spool.stats().events == 199)
        #expect(try await readAll(spool).events == (0..<199).map(sampleEvent))
        try await spool.append([sampleEvent(500)])
        await spool.close()
        let again = try await Spool.open(directory: dir.spool, options: smallSegments)
        #expect(again.recovery.problems.isEmpty)
        #expect(try await readAll(again).events == (0..<199).map(sampleEvent) + [sampleEvent(500)])
        await again.close()
    }

    @Test func staleSummariesAreRemoved() async throws {
        let (dir, before, positions) = try await multiSegmentSpool()
        let lastID = try #require(positions.last?.segment)
        let activeSummary = dir.spool + "/" + SegmentSummary.fileName(lastID)
        let orphan = dir.spool + "/" + SegmentSummary.fileName(lastID + 7)
        let wrong = SegmentSummary(
            segment: lastID, size: Int64(readBytes(dir.segmentPath(SpoolStore.segmentName(lastID))).count), records: 1, oldest: 1, newest: 1)
        writeBytes(activeSummary, wrong.encode())
        writeBytes(orphan, SegmentSummary(segment: lastID + 7, size: 16, records: 0, oldest: nil, newest: nil).encode())
        let spool = try await Spool.open(directory: dir.spool, options: smallSegments)
        #expect(!FileManager.default.fileExists(atPath: activeSummary), "the active segment is always scanned; its summary is stale")
        #expect(!FileManager.default.fileExists(atPath: orphan))
        #expect(try await spool.stats() == before)
        // Acknowledging everything deletes the sealed segments and their summaries.
        let all = try await readAll(spool)
        try await spool.acknowledge(upTo: all.end)
        #expect(dir.segmentFiles().count == 1)
        #expect(dir.summaryFiles().isEmpty)
        await spool.close()
    }
}
