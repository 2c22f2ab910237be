import Foundation
import Testing
import TallyCore
@testable import TallySpool
import TallyWorkload

/// Writes `count` sample events into a fresh spool and returns the directory, the segment path
/// and the position of every record.
func preparedSpool(_ count: Int, options spoolOptions: SpoolOptions = options()) async throws -> (TemporaryDirectory, String, [SpoolPosition]) {
    let dir = TemporaryDirectory()
    let spool = try await Spool.open(directory: dir.spool, options: spoolOptions)
    try await spool.append((0..<count).map(sampleEvent))
    let positions = try await readAll(spool).positions
    await spool.close()
    return (dir, dir.spool + "/" + dir.segmentFiles()[0], positions)
}

@Suite struct RecoveryTests {
    @Test func tornTailAtEveryByteOfTheLastRecord() async throws {
        let (dir, segment, positions) = try await preparedSpool(5)
        let original = readBytes(segment)
        let lastStart = Int(positions[4].offset)
        #expect(original.count > lastStart + 8)
        for cut in lastStart..<original.count {
            writeBytes(segment, Array(original[0..<cut]))
            try? FileManager.default.removeItem(atPath: dir.spool + "/" + QuarantineFile.fileName)
            let spool = try await Spool.open(directory: dir.spool, options: options())
            #expect(spool.recovery.problems.map(\.kind) == (cut == lastStart ? [] : [.tornTail]), "cut at \(cut)")
            #expect(try await readAll(spool).events == (0..<4).map(sampleEvent), "cut at \(cut)")
            #expect(try await spool.stats().quarantinedRegions == 0)
            try await spool.append([sampleEvent(99)])
            await spool.close()
            let again = try await Spool.open(directory: dir.spool, options: options())
            #expect(again.recovery.problems.isEmpty, "cut at \(cut)")
            #expect(try await readAll(again).events == (0..<4).map(sampleEvent) + [sampleEvent(99)], "cut at \(cut)")
            await again.close()
        }
    }

    @Test func bitFlipInAMiddleRecordIsQuarantined() async throws {
        let (dir, segment, positions) = try await preparedSpool(5)
        var bytes = readBytes(segment)
        let middle = Int(positions[2].offset)
        bytes[middle + 12] ^= 0x10
        let damaged = Array(bytes[middle..<Int(positions[3].offset)])
        writeBytes(segment, bytes)
        let spool = try await Spool.open(directory: dir.spool, options: options())
        #expect(spool.recovery.problems == [SpoolCorruption(kind: .corruptRecord, position: positions[2], length: UInt64(damaged.count))])
        #expect(try await readAll(spool).events == [0, 1, 3, 4].map(sampleEvent))
        let quarantined = try await spool.quarantined()
        #expect(quarantined.map(\.position) == [positions[2]])
        #expect(quarantined.first?.bytes == damaged)
        let verification = try await spool.verify()
        #expect(verification.records == 4)
        #expect(verification.problems.map(\.position) == [positions[2]])
        #expect(readBytes(segment) == bytes, "verify and recovery leave a middle record in place")
        try await spool.append([sampleEvent(5)])
        await spool.close()
        let again = try await Spool.open(directory: dir.spool, options: options())
        #expect(try await again.stats().quarantinedRegions == 1, "a region is quarantined once")
        #expect(try await readAll(again).events == [0, 1, 3, 4, 5].map(sampleEvent))
        await again.close()
    }

    @Test func garbageLengthResyncsToTheNextRecord() async throws {
        let (dir, segment, positions) = try await preparedSpool(5)
        var bytes = readBytes(segment)
        let middle = Int(positions[1].offset)
        bytes[middle + 3] = 0x7F  // length becomes ~2 GiB
        writeBytes(segment, bytes)
        let spool = try await Spool.open(directory: dir.spool, options: options())
        #expect(spool.recovery.problems.map(\.kind) == [.corruptRecord])
        #expect(spool.recovery.problems.first?.position == positions[1])
        #expect(try await readAll(spool).events == [0, 2, 3, 4].map(sampleEvent))
        await spool.close()
    }

    @Test func smallerPlausibleLengthResyncs() async throws {
        let (dir, segment, positions) = try await preparedSpool(5)
        var bytes = readBytes(segment)
        let middle = Int(positions[2].offset)
        bytes[middle] = 5
        writeBytes(segment, bytes)
        let spool = try await Spool.open(directory: dir.spool, options: options())
        #expect(
            spool.recovery.problems == [
                SpoolCorruption(kind: .corruptRecord, position: positions[2], length: positions[3].offset - positions[2].offset)
            ])
        #expect(try await readAll(spool).events == [0, 1, 3, 4].map(sampleEvent))
        await spool.close()
    }

    @Test func garbageAfterValidRecordsIsQuarantinedAndCut() async throws {
        let (dir, segment, _) = try await preparedSpool(3)
        let valid = readBytes(segment)
        let garbage = (0..<300).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
        writeBytes(segment, valid + garbage)
        let spool = try await Spool.open(directory: dir.spool, options: options())
        #expect(spool.recovery.problems.map(\.kind) == [.corruptRecord])
        #expect(try await readAll(spool).events == (0..<3).map(sampleEvent))
        #expect(try await spool.quarantined().first?.bytes == garbage)
        try await spool.append([sampleEvent(3)])
        #expect(try await readAll(spool).events == (0..<4).map(sampleEvent))
        await spool.close()
        let again = try await Spool.open(directory: dir.spool, options: options())
        #expect(again.recovery.problems.isEmpty)
        #expect(try await again.verify().isClean)
        await again.close()
    }

    /// Found by fuzzing (FuzzTesting/Corpus/FuzzSpoolRecovery/crash-b1fe702b… and crash-dd761d5f…):
    /// a damaged length that points at the end of the file, or past it, makes its record corrupt
    /// and the open resyncs to the valid record after it. An append then puts a valid record
    /// exactly where the length points (`atTheEnd`), or ends exactly there: neither may make the
    /// damaged record swallow the valid record inside its span, nor the appended one.
    @Test(arguments: [false, true])
    func damagedLengthSwallowsNothingAfterAnAppend(atTheEnd: Bool) async throws {
        let (dir, segment, positions) = try await preparedSpool(3)
        var bytes = readBytes(segment)
        let middle = Int(positions[1].offset)
        let appended = EventRecordCodec.encode(sampleEvent(3)).count + RecordFraming.headerBytes
        let length = UInt32(bytes.count + (atTheEnd ? 0 : appended) - middle - RecordFraming.headerBytes)
        for index in 0..<4 { bytes[middle + index] = UInt8(truncatingIfNeeded: length >> (8 * UInt32(index))) }
        writeBytes(segment, bytes)
        let spool = try await Spool.open(directory: dir.spool, options: options())
        #expect(spool.recovery.problems.map(\.kind) == [.corruptRecord])
        #expect(try await readAll(spool).events == [0, 2].map(sampleEvent))
        try await spool.append([sampleEvent(3)])
        #expect(readBytes(segment).count == bytes.count + appended)
        #expect(try await readAll(spool).events == [0, 2, 3].map(sampleEvent))
        await spool.close()
        let again = try await Spool.open(directory: dir.spool, options: options())
        #expect(try await readAll(again).events == [0, 2, 3].map(sampleEvent))
        await again.close()
    }

    @Test func zeroFilledTailIsTorn() async throws {
        let (dir, segment, _) = try await preparedSpool(3)
        writeBytes(segment, readBytes(segment) + [UInt8](repeating: 0, count: 4096))
        let spool = try await Spool.open(directory: dir.spool, options: options())
        #expect(spool.recovery.problems.map(\.kind) == [.tornTail])
        #expect(try await spool.stats().quarantinedRegions == 0)
        #expect(try await readAll(spool).events == (0..<3).map(sampleEvent))
        await spool.close()
    }

    @Test func truncatedSealedSegmentKeepsEverythingElse() async throws {
        let dir = TemporaryDirectory()
        let small = options { $0.segmentBytes = 600 }
        let spool = try await Spool.open(directory: dir.spool, options: small)
        for index in 0..<30 { try await spool.append([sampleEvent(index)]) }
        let all = try await readAll(spool)
        await spool.close()
        let files = dir.segmentFiles()
        #expect(files.count >= 3)
        let victim = dir.spool + "/" + files[1]
        let victimID = try #require(SpoolStore.segmentID(fromName: files[1]))
        let inVictim = all.positions.enumerated().filter { $0.element.segment == victimID }.map(\.offset)
        let lastInVictim = try #require(all.positions.last { $0.segment == victimID })
        writeBytes(victim, Array(readBytes(victim)[0..<Int(lastInVictim.offset) + 5]))
        let reopened = try await Spool.open(directory: dir.spool, options: small)
        #expect(reopened.recovery.problems.map(\.kind) == [.tornTail])
        let expected = (0..<30).filter { $0 != inVictim.last }.map(sampleEvent)
        #expect(try await readAll(reopened).events == expected)
        await reopened.close()
    }

    @Test func missingCheckpointStartsFromTheOldestSegment() async throws {
        let dir = TemporaryDirectory()
        let spool = try await Spool.open(directory: dir.spool, options: options())
        try await spool.append((0..<10).map(sampleEvent))
        let first = try await spool.readFromAcknowledged(maxEvents: 4)
        try await spool.acknowledge(upTo: first.end)
        #expect(try await readAll(spool).events == (4..<10).map(sampleEvent))
        await spool.close()
        let kept = try await Spool.open(directory: dir.spool, options: options())
        #expect(kept.recovery.checkpointFound)
        #expect(try await readAll(kept).events == (4..<10).map(sampleEvent))
        #expect(try await kept.stats().events == 6)
        await kept.close()
        try FileManager.default.removeItem(atPath: dir.spool + "/checkpoint")
        let reopened = try await Spool.open(directory: dir.spool, options: options())
        #expect(!reopened.recovery.checkpointFound)
        #expect(try await readAll(reopened).events == (0..<10).map(sampleEvent))
        await reopened.close()
        writeBytes(dir.spool + "/checkpoint", [1, 2, 3])
        let garbled = try await Spool.open(directory: dir.spool, options: options())
        #expect(!garbled.recovery.checkpointFound)
        #expect(try await readAll(garbled).events.count == 10)
        await garbled.close()
    }

    @Test func emptyFilesDoNotStopTheSpool() async throws {
        let dir = TemporaryDirectory()
        try FileManager.default.createDirectory(atPath: dir.spool, withIntermediateDirectories: true)
        for name in [SpoolStore.segmentName(3), SpoolStore.segmentName(5), "checkpoint", QuarantineFile.fileName, "LOCK"] {
            writeBytes(dir.spool + "/" + name, [])
        }
        let spool = try await Spool.open(directory: dir.spool, options: options())
        #expect(!spool.recovery.checkpointFound)
        #expect(spool.recovery.emptySegmentsRepaired == 2)
        // Segment 3 is emptied and 4 gone between 3 and 5: accounted as missing, not fatal.
        #expect(spool.recovery.missingSegments == [3, 4])
        #expect(try await readAll(spool).events.isEmpty)
        try await spool.append([sampleEvent(1), sampleEvent(2)])
        #expect(try await readAll(spool).events == [sampleEvent(1), sampleEvent(2)])
        await spool.close()
        #expect(dir.segmentFiles() == [SpoolStore.segmentName(5)])
        let again = try await Spool.open(directory: dir.spool, options: options())
        #expect(again.recovery.problems.isEmpty)
        #expect(try await readAll(again).events == [sampleEvent(1), sampleEvent(2)])
        await again.close()
    }

    @Test func badSegmentHeaderIsReportedAndRecordsKept() async throws {
        let (dir, segment, _) = try await preparedSpool(3)
        var bytes = readBytes(segment)
        bytes[0] = UInt8(ascii: "X")
        writeBytes(segment, bytes)
        let spool = try await Spool.open(directory: dir.spool, options: options())
        #expect(spool.recovery.problems.map(\.kind) == [.badSegmentHeader])
        #expect(try await readAll(spool).events == (0..<3).map(sampleEvent))
        #expect(try await spool.verify().isClean, "the header was rewritten after being quarantined")
        await spool.close()
    }

    @Test func randomDamageNeverCrashesAndKeepsUndamagedRecords() async throws {
        let (dir, segment, positions) = try await preparedSpool(20)
        let original = readBytes(segment)
        var generator = SplitMix64(seed: 42)
        for round in 0..<40 {
            var bytes = original
            let target = Int(generator.next() % UInt64(bytes.count - 16)) + 16
            let span = Int(generator.next() % 24) + 1
            for index in target..<min(bytes.count, target + span) { bytes[index] = UInt8(truncatingIfNeeded: generator.next()) }
            writeBytes(segment, bytes)
            try? FileManager.default.removeItem(atPath: dir.spool + "/" + QuarantineFile.fileName)
            let spool = try await Spool.open(directory: dir.spool, options: options())
            let events = try await readAll(spool).events
            // Every record that does not overlap the damage is still there.
            for (index, position) in positions.enumerated() {
                let start = Int(position.offset)
                let end = index + 1 < positions.count ? Int(positions[index + 1].offset) : original.count
                if end <= target || start >= target + span {
                    #expect(events.contains(sampleEvent(index)), "round \(round): record \(index) lost")
                }
            }
            await spool.close()
            writeBytes(segment, original)
        }
    }
}

@Suite struct LiveSpoolInspectionTests {
    /// `tallyctl spool status` beside a running agent: a segment deleted after an ack between
    /// the listing and the open is passed over by a read-only open; a writable open (which holds
    /// the lock, so nobody deletes behind it) still fails on it.
    @Test func aReadOnlyOpenPassesOverASegmentDeletedUnderIt() async throws {
        let dir = TemporaryDirectory()
        let spool = try await Spool.open(directory: dir.spool, options: options { $0.segmentBytes = 4_096 })
        for index in 0..<100 { try await spool.append([sampleEvent(index)]) }
        let head = try await spool.readFromAcknowledged(maxEvents: 20)
        try await spool.acknowledge(upTo: head.end)
        let total = try await spool.stats().events
        await spool.close()
        let segments = dir.segmentFiles()
        #expect(segments.count >= 3, "the test needs several segments")
        let second = try #require(segments.dropFirst().first)
        let vanishing = TestFileOperations()
        vanishing.state.withLock { $0.vanished = [second] }
        let inspected = try await Spool.open(directory: dir.spool, options: options { $0.access = .readOnly }, fileOperations: vanishing)
        let stats = try await inspected.stats()
        #expect(stats.events < total && stats.events > 0)
        await inspected.close()
        await #expect(throws: SpoolError.self) {
            _ = try await Spool.open(directory: dir.spool, options: options(), fileOperations: vanishing)
        }
    }
}
