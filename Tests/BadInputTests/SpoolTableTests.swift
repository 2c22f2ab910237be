import Foundation
import TallyCore
import Testing

@testable import TallySpool

/// A spool of five events, closed, for one row to damage: its directory, its one segment and
/// the position of every record. Two events are acknowledged and a batch sequence was leased,
/// as a running agent would have done.
struct DamagedSpool {
    static let count = 5
    static let acknowledged = 2

    static func event(_ index: Int) -> UsageEvent {
        UsageEvent(
            tenant: "tenant-\(index % 3)", metric: "api_calls", quantity: Quantity(Int64(index + 1)),
            timestamp: EventTime(microseconds: 1_768_467_600_000_000 + Int64(index) * 1_000), id: "req-\(index)",
            properties: Properties([("endpoint", "/v1/search")]))
    }

    static let events = (0..<count).map(event)
    /// The bytes of the last record: a torn tail can cut it anywhere in them.
    static let lastRecordBytes = EventRecordCodec.encode(event(count - 1)).count + RecordFraming.headerBytes

    let directory: String
    let segment: String
    let positions: [SpoolPosition]
    let original: [UInt8]

    init(segmentBytes: Int? = nil) async throws {
        directory = makeTemporaryDirectory("spool")
        var options = SpoolOptions()
        options.fsync = .never
        if let segmentBytes { options.segmentBytes = segmentBytes }
        let spool = try await Spool.open(directory: directory, options: options)
        try await spool.append(Self.events)
        let batch = try await spool.readFromAcknowledged()
        positions = batch.positions
        _ = try await spool.takeSequence()
        try await spool.acknowledge(upTo: positions[Self.acknowledged])
        await spool.close()
        segment = directory + "/" + SpoolStore.segmentName(positions[0].segment)
        original = Self.read(segment)
    }

    static func read(_ path: String) -> [UInt8] { FileManager.default.contents(atPath: path).map { [UInt8]($0) } ?? [] }
    static func write(_ path: String, _ bytes: [UInt8]) { _ = FileManager.default.createFile(atPath: path, contents: Data(bytes)) }

    func path(_ name: String) -> String { directory + "/" + name }

    /// Opens the damaged spool and reads every unacknowledged event, then closes it.
    func recover() async throws -> (report: RecoveryReport, events: [UsageEvent], skipped: Int, stats: SpoolStats, quarantined: [QuarantinedRegion]) {
        var options = SpoolOptions()
        options.fsync = .never
        let spool = try await Spool.open(directory: directory, options: options)
        var events: [UsageEvent] = []
        var skipped = 0
        var batch = try await spool.readFromAcknowledged()
        while !batch.events.isEmpty || batch.skippedCorruptRegions > 0 {
            events += batch.events
            skipped += batch.skippedCorruptRegions
            if batch.end == batch.start { break }
            batch = try await spool.read(from: batch.end)
        }
        let stats = try await spool.stats()
        let quarantined = try await spool.quarantined()
        await spool.close()
        return (spool.recovery, events, skipped, stats, quarantined)
    }

    func remove() { removeDirectory(directory) }

    /// The report of an open that found `problems` in the one segment, the checkpoint intact.
    func report(records: Int, problems: [SpoolCorruption] = []) -> RecoveryReport {
        var report = RecoveryReport()
        report.segmentsScanned = 1
        report.recordsFound = records
        report.problems = problems
        return report
    }

    var unacknowledged: [UsageEvent] { Array(Self.events[Self.acknowledged...]) }
}

/// Section 4: spool files. A torn tail at every offset of the last record, a bit flip in every
/// field of a record, a missing or damaged checkpoint and sequence file, damaged and newer
/// segment headers: the exact recovery report, and every record outside the damage recovered
/// intact.
@Suite("Bad input: spool files", .serialized)
struct SpoolTableTests {
    /// An append cut short at `cut` bytes into the last record: truncated away, reported as a
    /// torn tail (nothing when the cut is at the record's start), nothing quarantined.
    @Test(arguments: 0..<DamagedSpool.lastRecordBytes)
    func tornTail(_ cut: Int) async throws {
        let spool = try await DamagedSpool()
        defer { spool.remove() }
        let last = spool.positions[DamagedSpool.count - 1]
        #expect(spool.original.count == Int(last.offset) + DamagedSpool.lastRecordBytes)
        DamagedSpool.write(spool.segment, Array(spool.original[0..<(Int(last.offset) + cut)]))
        let recovered = try await spool.recover()
        let problems = cut == 0 ? [] : [SpoolCorruption(kind: .tornTail, position: last, length: UInt64(cut))]
        #expect(recovered.report == spool.report(records: DamagedSpool.count - 1, problems: problems), "cut \(cut)")
        #expect(recovered.events == Array(spool.unacknowledged.dropLast()), "cut \(cut)")
        #expect(recovered.quarantined.isEmpty && recovered.skipped == 0)
        #expect(DamagedSpool.read(spool.segment) == Array(spool.original[0..<Int(last.offset)]), "the tail is truncated away")
    }

    /// A torn write that left zeros (a preallocated tail): the same torn tail, same length.
    @Test func tornTailOfZeros() async throws {
        let spool = try await DamagedSpool()
        defer { spool.remove() }
        let last = spool.positions[DamagedSpool.count - 1]
        var bytes = spool.original
        for index in (Int(last.offset) + 4)..<bytes.count { bytes[index] = 0 }
        bytes.replaceSubrange(Int(last.offset)..<(Int(last.offset) + 4), with: [0, 0, 0, 0])
        DamagedSpool.write(spool.segment, bytes)
        let recovered = try await spool.recover()
        let problem = SpoolCorruption(kind: .tornTail, position: last, length: UInt64(DamagedSpool.lastRecordBytes))
        #expect(recovered.report == spool.report(records: DamagedSpool.count - 1, problems: [problem]))
        #expect(recovered.events == Array(spool.unacknowledged.dropLast()))
    }

    /// A flipped bit: `(field, byte of the record, bit)`.
    struct Flip: Sendable, CustomTestStringConvertible {
        let field: String
        let byte: Int
        let bit: Int
        var testDescription: String { "\(field) byte \(byte) bit \(bit)" }
    }

    static let flips: [Flip] =
        (0..<32).map { Flip(field: "length", byte: $0 / 8, bit: $0 % 8) } + (0..<32).map { Flip(field: "crc", byte: 4 + $0 / 8, bit: $0 % 8) }
        + (8..<EventRecordCodec.encode(DamagedSpool.event(3)).count + 8).map { Flip(field: "payload", byte: $0, bit: $0 % 8) }

    /// A bit flipped anywhere in the fourth of five records (length, CRC or payload): that
    /// record alone is reported and quarantined (byte for byte) and skipped; the records before
    /// and after it are recovered intact, and the segment keeps its bytes.
    @Test(arguments: flips)
    func bitFlip(_ flip: Flip) async throws {
        let spool = try await DamagedSpool()
        defer { spool.remove() }
        let start = Int(spool.positions[3].offset)
        let end = Int(spool.positions[4].offset)
        var bytes = spool.original
        bytes[start + flip.byte] ^= UInt8(1) << UInt8(flip.bit)
        DamagedSpool.write(spool.segment, bytes)
        let recovered = try await spool.recover()
        let problem = SpoolCorruption(kind: .corruptRecord, position: spool.positions[3], length: UInt64(end - start))
        #expect(recovered.report == spool.report(records: DamagedSpool.count - 1, problems: [problem]), "\(flip.testDescription)")
        #expect(recovered.events == [DamagedSpool.event(2), DamagedSpool.event(4)], "\(flip.testDescription)")
        #expect(recovered.skipped == 1)
        #expect(recovered.quarantined.map(\.position) == [spool.positions[3]])
        #expect(recovered.quarantined.first?.bytes == Array(bytes[start..<end]))
        #expect(DamagedSpool.read(spool.segment) == bytes, "a record in the middle stays where it is")
    }

    /// A length damaged so that the record seems to end exactly at the end of the file: the
    /// valid record after it must not be swallowed with it.
    @Test func lengthReachingTheEndOfTheFile() async throws {
        let spool = try await DamagedSpool()
        defer { spool.remove() }
        let start = Int(spool.positions[3].offset)
        var bytes = spool.original
        let length = UInt32(bytes.count - start - RecordFraming.headerBytes)
        for index in 0..<4 { bytes[start + index] = UInt8(truncatingIfNeeded: length >> (8 * UInt32(index))) }
        DamagedSpool.write(spool.segment, bytes)
        let recovered = try await spool.recover()
        let problem = SpoolCorruption(
            kind: .corruptRecord, position: spool.positions[3], length: spool.positions[4].offset - spool.positions[3].offset)
        #expect(recovered.report == spool.report(records: DamagedSpool.count - 1, problems: [problem]))
        #expect(recovered.events == [DamagedSpool.event(2), DamagedSpool.event(4)])
    }

    /// A record whose CRC matches but whose payload is in a newer codec version: counted as a
    /// record at open, skipped and quarantined by the reader, named by `verify`.
    @Test func recordFromANewerCodec() async throws {
        let spool = try await DamagedSpool()
        defer { spool.remove() }
        let start = Int(spool.positions[3].offset)
        let end = Int(spool.positions[4].offset)
        var bytes = spool.original
        bytes[start + 8] = EventRecordCodec.version + 1
        let crc = bytes.withUnsafeBytes { raw in
            var crc = CRC32C()
            crc.update(UnsafeRawBufferPointer(rebasing: raw[start..<(start + 4)]))
            crc.update(UnsafeRawBufferPointer(rebasing: raw[(start + 8)..<end]))
            return crc.value
        }
        for index in 0..<4 { bytes[start + 4 + index] = UInt8(truncatingIfNeeded: crc >> (8 * UInt32(index))) }
        DamagedSpool.write(spool.segment, bytes)
        let recovered = try await spool.recover()
        #expect(recovered.report == spool.report(records: DamagedSpool.count))
        #expect(recovered.events == [DamagedSpool.event(2), DamagedSpool.event(4)])
        #expect(recovered.skipped == 1)
        #expect(recovered.quarantined.map(\.position) == [spool.positions[3]])
        let again = try await Spool.open(directory: spool.directory)
        let verification = try await again.verify()
        await again.close()
        #expect(verification.problems == [SpoolCorruption(kind: .undecodableRecord, position: spool.positions[3], length: UInt64(end - start))])
    }

    /// The checkpoint file, damaged: `(name, damage, checkpoint found, a problem reported, the
    /// events read)`. Without a valid checkpoint reading starts from the oldest segment: the
    /// acknowledged events are shipped again (the collector dedupes them), none is lost.
    static let checkpointRows: [(String, @Sendable ([UInt8]) -> [UInt8]?, Bool, Bool, Range<Int>)] = [
        ("missing", { _ in nil }, false, false, 0..<5),
        ("empty", { _ in [] }, false, true, 0..<5),
        (
            "both slots flipped", { bytes in bytes.enumerated().map { $0.offset == 10 || $0.offset == 42 ? $0.element ^ 1 : $0.element } }, false,
            true, 0..<5
        ),
        (
            "the newest slot flipped: the older one counts", { bytes in bytes.enumerated().map { $0.offset == 42 ? $0.element ^ 1 : $0.element } },
            true, false, 0..<5
        ),
        ("the oldest slot flipped", { bytes in bytes.enumerated().map { $0.offset == 10 ? $0.element ^ 1 : $0.element } }, true, false, 2..<5),
        ("slots of a newer version", { bytes in newerSlots(bytes) }, false, true, 0..<5),
    ]

    /// The checkpoint's slots rewritten as version 2, with matching CRCs.
    static func newerSlots(_ bytes: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        for slot in 0..<2 {
            var slotBytes = Array(bytes[(slot * 32)..<(slot * 32 + 28)])
            slotBytes[4] = 2
            slotBytes.appendLittleEndian(UInt64(CRC32C.checksum(slotBytes)), bytes: 4)
            out += slotBytes
        }
        return out
    }

    @Test(arguments: checkpointRows.indices)
    func checkpoint(_ index: Int) async throws {
        let (name, damage, found, reported, expected) = Self.checkpointRows[index]
        let spool = try await DamagedSpool()
        defer { spool.remove() }
        let file = spool.path("checkpoint")
        let stored = DamagedSpool.read(file)
        #expect(stored.count == 64, "two 32-byte slots")
        if let damaged = damage(stored) { DamagedSpool.write(file, damaged) } else { try FileManager.default.removeItem(atPath: file) }
        let recovered = try await spool.recover()
        var report = spool.report(records: DamagedSpool.count)
        report.checkpointFound = found
        if reported { report.problems = [SpoolCorruption(kind: .badCheckpoint, position: SpoolPosition(segment: 0, offset: 0), length: 0)] }
        #expect(recovered.report == report, "\(name)")
        #expect(recovered.events == Array(DamagedSpool.events[expected]), "\(name)")
    }

    /// A checkpoint past the end of its segment (the segment lost bytes behind the agent's back
    /// after they were acknowledged): reported with the position it named, and clamped to the
    /// segment's end — everything left in the segment was acknowledged, so it is retired.
    @Test func checkpointPastTheSegmentEnd() async throws {
        let spool = try await DamagedSpool()
        defer { spool.remove() }
        let past = spool.positions[4]
        DamagedSpool.write(spool.path("checkpoint"), Checkpoint.encode(past) + [UInt8](repeating: 0, count: 32))
        DamagedSpool.write(spool.segment, Array(spool.original[0..<Int(spool.positions[3].offset)]))
        let recovered = try await spool.recover()
        var report = spool.report(records: 3)
        report.problems = [SpoolCorruption(kind: .badCheckpoint, position: past, length: 0)]
        #expect(recovered.report == report)
        #expect(recovered.events.isEmpty)
        #expect(recovered.stats.acknowledged == SpoolPosition(segment: past.segment + 1, offset: 16))
    }

    /// A damaged `shipper.seq`: the lease continues from the clock, above every sequence used.
    @Test func sequenceFileDamaged() async throws {
        let spool = try await DamagedSpool()
        defer { spool.remove() }
        let file = spool.path("shipper.seq")
        DamagedSpool.write(file, DamagedSpool.read(file).map { $0 ^ 0x55 })
        let before = EventTime.now().microseconds
        let opened = try await Spool.open(directory: spool.directory)
        let sequence = try await opened.takeSequence()
        await opened.close()
        let recovered = try #require(opened.recovery.sequenceRecovered)
        #expect(matches(recovered, "\(file) is damaged; continuing from the time-based sequence *"), "\(recovered)")
        #expect(sequence >= UInt64(before) && sequence > 4_096)
        var report = spool.report(records: DamagedSpool.count)
        report.sequenceRecovered = recovered
        #expect(opened.recovery == report)
    }

    /// A segment header damaged: `(name, header byte, new value)`. Its 16 bytes are reported,
    /// quarantined and rewritten; every record is kept.
    static let headerRows: [(String, Int, UInt8)] = [
        ("magic", 0, UInt8(ascii: "X")),
        ("a reserved byte", 6, 1),
        ("the segment number", 8, 9),
    ]

    @Test(arguments: headerRows.indices)
    func segmentHeader(_ index: Int) async throws {
        let (name, byte, value) = Self.headerRows[index]
        let spool = try await DamagedSpool()
        defer { spool.remove() }
        var bytes = spool.original
        bytes[byte] = value
        DamagedSpool.write(spool.segment, bytes)
        let recovered = try await spool.recover()
        let problem = SpoolCorruption(kind: .badSegmentHeader, position: SpoolPosition(segment: spool.positions[0].segment, offset: 0), length: 16)
        #expect(recovered.report == spool.report(records: DamagedSpool.count, problems: [problem]), "\(name)")
        #expect(recovered.events == spool.unacknowledged, "\(name)")
        #expect(recovered.quarantined.map(\.bytes) == [Array(bytes[0..<16])], "\(name)")
        #expect(DamagedSpool.read(spool.segment) == spool.original, "\(name): the header is rewritten, the records untouched")
    }

    /// A segment whose intact header names a newer format: the open fails, saying so, and
    /// changes nothing (this version would otherwise rewrite what it cannot read).
    @Test(arguments: [SpoolAccess.exclusive, .readOnly])
    func segmentFromANewerFormat(_ access: SpoolAccess) async throws {
        let spool = try await DamagedSpool()
        defer { spool.remove() }
        var bytes = spool.original
        bytes[4] = RecordFraming.segmentVersion + 1
        DamagedSpool.write(spool.segment, bytes)
        let filesBefore = try FileManager.default.contentsOfDirectory(atPath: spool.directory).sorted()
        var options = SpoolOptions()
        options.access = access
        await #expect(throws: SpoolError.unsupportedFormat(path: spool.segment, version: 2, supported: 1)) {
            _ = try await Spool.open(directory: spool.directory, options: options)
        }
        #expect(DamagedSpool.read(spool.segment) == bytes)
        #expect(try FileManager.default.contentsOfDirectory(atPath: spool.directory).sorted() == filesBefore)
        #expect(
            SpoolError.unsupportedFormat(path: spool.segment, version: 2, supported: 1).description
                == "\(spool.segment) is in spool format version 2, and this version of Tally reads version 1: it was left unchanged; run the tally-agent that wrote it (or a later one) to ship its events"
        )
    }

    /// A segment between others deleted behind the agent's back: named in the report and kept
    /// on the books; the events of the other segments are recovered.
    @Test func missingMiddleSegment() async throws {
        let spool = try await DamagedSpool(segmentBytes: 200)
        defer { spool.remove() }
        let segments = Set(spool.positions.map(\.segment)).sorted()
        #expect(segments.count >= 3, "\(spool.positions)")
        let gone = segments[1]
        try FileManager.default.removeItem(atPath: spool.path(SpoolStore.segmentName(gone)))
        let recovered = try await spool.recover()
        #expect(recovered.report.missingSegments == [gone])
        #expect(
            recovered.report.problems.filter { $0.kind == .missingSegment } == [
                SpoolCorruption(kind: .missingSegment, position: SpoolPosition(segment: gone, offset: 0), length: 0)
            ])
        let kept = zip(DamagedSpool.events, spool.positions).filter { $0.1.segment != gone && $0.1 >= spool.positions[DamagedSpool.acknowledged] }
            .map(\.0)
        #expect(recovered.events == kept)
        #expect(recovered.stats.missingSegments == 1)
    }
}
