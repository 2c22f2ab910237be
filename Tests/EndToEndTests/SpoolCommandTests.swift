import Foundation
import Testing
import TallyCore
import TallySpool

/// A spool written with the library in a temporary directory, for `tallyctl spool ...` to read.
final class SpoolFixture {
    let root: String
    var spool: String { root + "/spool" }
    let events: [UsageEvent]

    init(count: Int = 30) {
        root = NSTemporaryDirectory() + "tally-spoolctl-" + UUID().uuidString
        try? FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        events = (0..<count).map(Self.event)
    }

    static func event(_ index: Int) -> UsageEvent {
        let tenants = ["acme", "globex", "initech"]
        let metric = index % 2 == 0 ? "api_calls" : "bytes_out"
        let id: String? = index % 4 == 0 ? nil : "req-\(index)"
        let time = EventTime(seconds: 1_776_081_600 + Int64(index) * 60)
        let quantity = Quantity(nanos: Int128(index) * 1_500_000_000)
        return UsageEvent(
            tenant: tenants[index % 3], metric: metric, quantity: quantity, timestamp: time, id: id,
            properties: Properties([("endpoint", "/api/v1/search"), ("region", "eu")]))
    }
    deinit { try? FileManager.default.removeItem(atPath: root) }

    func open() async throws -> Spool {
        var options = SpoolOptions()
        options.fsync = .never
        return try await Spool.open(directory: spool, options: options)
    }

    /// Writes the events; returns each one's position and the stats the library reports.
    func write(acknowledging acked: Int = 0) async throws -> ([SpoolPosition], SpoolStats) {
        let spool = try await open()
        try await spool.append(events)
        let batch = try await spool.readFromAcknowledged(maxEvents: events.count)
        if acked > 0 {
            // As a shipper does: the two batches that carried them (sequences 41 and 42), then
            // the checkpoint.
            let middle = acked / 2
            try await spool.recordAcknowledged([
                AcknowledgedBatch(sequence: 41, start: batch.start, end: batch.positions[middle]),
                AcknowledgedBatch(sequence: 42, start: batch.positions[middle], end: batch.positions[acked]),
            ])
            try await spool.acknowledge(upTo: batch.positions[acked])
        }
        let stats = try await spool.stats()
        await spool.close()
        return (batch.positions, stats)
    }

    var segmentPath: String {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: spool)) ?? []
        return spool + "/" + (names.filter { $0.hasPrefix("segment-") && $0.hasSuffix(".tsp") }.sorted().first ?? "none")
    }

    /// Every file of the spool directory and its bytes.
    func snapshot() throws -> [String: Data] {
        var files: [String: Data] = [:]
        for name in try FileManager.default.contentsOfDirectory(atPath: spool) {
            files[name] = try Data(contentsOf: URL(fileURLWithPath: spool + "/" + name))
        }
        return files
    }

    func ctl(_ arguments: [String]) async throws -> BinaryRunner.Outcome {
        try await BinaryRunner.run("tallyctl", ["spool"] + arguments + ["--spool", spool])
    }
}

extension BinaryRunner.Outcome {
    var lines: [String] { stdoutText.split(separator: "\n", omittingEmptySubsequences: false).dropLast().map(String.init) }
}

@Suite struct SpoolCommandTests {
    @Test func statusAsTextAndJSON() async throws {
        let fixture = SpoolFixture()
        let (_, stats) = try await fixture.write(acknowledging: 5)
        let before = try fixture.snapshot()

        let json = try await fixture.ctl(["status", "--json"])
        #expect(json.status == 0, "\(json.stderr)")
        #expect(json.stderr.isEmpty)
        let object = try #require(try JSONSerialization.jsonObject(with: json.stdout) as? [String: Any])
        #expect(object["events"] as? Int == 25)
        #expect(object["backlog_bytes"] as? Int == Int(stats.backlogBytes))
        #expect(object["bytes_on_disk"] as? Int == Int(stats.bytesOnDisk))
        #expect(object["segments"] as? Int == 1)
        #expect(object["oldest_event"] as? String == "2026-04-13T12:05:00Z")
        #expect(object["oldest_event_age_seconds"] is Int)
        #expect(object["quarantined_regions"] as? Int == 0)

        let text = try await fixture.ctl(["status"])
        #expect(text.status == 0)
        #expect(text.lines.contains("events:       25 unacknowledged"))
        #expect(text.lines.contains("backlog:      \(stats.backlogBytes) bytes (\(stats.bytesOnDisk) bytes on disk)"))
        #expect(text.lines.contains("segments:     1"))
        #expect(text.lines.contains { $0.hasPrefix("oldest event: 2026-04-13T12:05:00Z (") })
        #expect(text.lines.contains("quarantined:  0 corrupt regions"))
        #expect(try fixture.snapshot() == before, "status changed the spool")
    }

    @Test func inspectPrintsTheEventsWithFiltersAndPositions() async throws {
        let fixture = SpoolFixture()
        let (positions, _) = try await fixture.write()
        let before = try fixture.snapshot()

        let all = try await fixture.ctl(["inspect"])
        #expect(all.status == 0, "\(all.stderr)")
        #expect(all.lines == fixture.events.map(\.jsonLine))

        let filtered = try await fixture.ctl([
            "inspect", "--tenant", "acme", "--metric", "api_calls", "--from", "2026-04-13T12:06:00Z", "--to", "2026-04-13T12:24:00Z",
        ])
        let expected = fixture.events.filter {
            $0.tenant == "acme" && $0.metric == "api_calls" && $0.timestamp >= EventTime(seconds: 1_776_081_960)
                && $0.timestamp < EventTime(seconds: 1_776_083_040)
        }
        #expect(expected.count == 3)
        #expect(filtered.lines == expected.map(\.jsonLine))

        let limited = try await fixture.ctl(["inspect", "--metric", "bytes_out", "--limit", "4", "--positions"])
        let odd = Array(zip(fixture.events, positions).filter { $0.0.metric == "bytes_out" }.prefix(4))
        #expect(limited.lines == odd.map { "{\"segment\":\($0.1.segment),\"offset\":\($0.1.offset),\"event\":\($0.0.jsonLine)}" })

        let bad = try await fixture.ctl(["inspect", "--from", "yesterday"])
        #expect(bad.status == 2)
        #expect(bad.stderr.split(separator: "\n").count == 1)
        #expect(try fixture.snapshot() == before, "inspect changed the spool")
    }

    /// The agent's side of a trace: an event by id, acknowledged (with the batch that shipped
    /// it) or still waiting, with its position and fingerprint; an id the spool does not hold is
    /// exit 1 with a reason.
    @Test func inspectByIDSaysWhereTheEventIsAndWhetherItWasAcknowledged() async throws {
        let fixture = SpoolFixture()
        let (positions, _) = try await fixture.write(acknowledging: 10)
        let before = try fixture.snapshot()
        for (index, acknowledged, batch) in [(2, true, "41"), (5, true, "42"), (13, false, "null")] {
            let found = try await fixture.ctl(["inspect", "--id", "req-\(index)"])
            #expect(found.status == 0, "\(found.stderr)")
            let event = fixture.events[index]
            #expect(
                found.lines == [
                    "{\"segment\":\(positions[index].segment),\"offset\":\(positions[index].offset),\"acknowledged\":\(acknowledged),"
                        + "\"batch\":\(batch),\"fingerprint\":\"\(Fingerprint(of: event))\",\"event\":\(event.jsonLine)}"
                ])
        }
        let otherTenant = try await fixture.ctl(["inspect", "--id", "req-13", "--tenant", "nobody"])
        #expect(otherTenant.status == 1 && otherTenant.lines.isEmpty)
        #expect(otherTenant.stderr.contains("no event with id 'req-13'") && otherTenant.stderr.contains("tallyctl trace"))
        #expect(try fixture.snapshot() == before, "inspect --id changed the spool")
    }

    @Test func exportWritesUnacknowledgedOrAllEvents() async throws {
        let fixture = SpoolFixture()
        _ = try await fixture.write(acknowledging: 10)
        let before = try fixture.snapshot()

        let unacked = try await fixture.ctl(["export"])
        #expect(unacked.status == 0, "\(unacked.stderr)")
        #expect(unacked.lines == fixture.events[10...].map(\.jsonLine))

        let everything = try await fixture.ctl(["export", "--all"])
        #expect(everything.lines == fixture.events.map(\.jsonLine))

        let file = fixture.root + "/export.jsonl"
        let toFile = try await fixture.ctl(["export", "--output", file])
        #expect(toFile.status == 0)
        #expect(toFile.stdout.isEmpty)
        #expect(try String(contentsOfFile: file, encoding: .utf8) == fixture.events[10...].map { $0.jsonLine + "\n" }.joined())

        let inside = try await fixture.ctl(["export", "--output", fixture.spool + "/out.jsonl"])
        #expect(inside.status == 2, "an export never writes into the spool")
        #expect(try fixture.snapshot() == before, "export changed the spool")
    }

    @Test func verifyReportsACorruptByteBySegmentAndOffset() async throws {
        let fixture = SpoolFixture()
        let (positions, _) = try await fixture.write()
        let segmentBytes = try Data(contentsOf: URL(fileURLWithPath: fixture.segmentPath))

        let clean = try await fixture.ctl(["verify"])
        #expect(clean.status == 0, "\(clean.stdoutText) \(clean.stderr)")
        #expect(clean.lines == ["verified 1 segments, 30 records, \(segmentBytes.count) bytes: clean"])

        var damaged = segmentBytes
        let victim = Int(positions[7].offset)
        damaged[victim + 14] ^= 0x20
        try damaged.write(to: URL(fileURLWithPath: fixture.segmentPath))
        let before = try fixture.snapshot()
        let corrupt = try await fixture.ctl(["verify"])
        #expect(corrupt.status == 1)
        let length = positions[8].offset - positions[7].offset
        #expect(
            corrupt.lines == [
                "segment \(positions[7].segment) offset \(positions[7].offset): corrupt record, \(length) bytes",
                "verified 1 segments, 29 records, \(segmentBytes.count) bytes: 1 corrupt",
            ])
        #expect(try fixture.snapshot() == before, "verify changed the spool")

        // inspect skips the corrupt record, says so, and still changes nothing.
        let inspect = try await fixture.ctl(["inspect"])
        #expect(inspect.status == 0)
        #expect(inspect.lines == fixture.events.enumerated().filter { $0.offset != 7 }.map(\.element.jsonLine))
        #expect(inspect.stderr.contains("skipped 1 corrupt"))
        #expect(try fixture.snapshot() == before)
    }

    /// A segment deleted or emptied behind the agent's back, a damaged checkpoint and a
    /// damaged or deleted shipper.seq are found by verify (an earlier version said "clean").
    @Test func verifyFindsMissingSegmentsAndDamagedStateFiles() async throws {
        let fixture = SpoolFixture(count: 600)
        var options = SpoolOptions()
        options.fsync = .never
        options.segmentBytes = 8 << 10
        let spool = try await Spool.open(directory: fixture.spool, options: options)
        for chunk in stride(from: 0, to: 600, by: 50) { try await spool.append(Array(fixture.events[chunk..<(chunk + 50)])) }
        let first = try await spool.readFromAcknowledged(maxEvents: 10)
        try await spool.acknowledge(upTo: first.end)
        await spool.close()
        let segments = try FileManager.default.contentsOfDirectory(atPath: fixture.spool).filter { $0.hasPrefix("segment-") && $0.hasSuffix(".tsp") }
            .sorted()
        #expect(segments.count >= 4)
        // A valid shipper.seq, as the agent leaves it: verify is clean.
        let sequenceFile = fixture.spool + "/shipper.seq"
        try Data(
            [0x54, 0x53, 0x45, 0x51, 1, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0] + crcBytes([0x54, 0x53, 0x45, 0x51, 1, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0])
        )
        .write(to: URL(fileURLWithPath: sequenceFile))
        let clean = try await fixture.ctl(["verify"])
        #expect(clean.status == 0, "\(clean.stdoutText)")

        try FileManager.default.removeItem(atPath: fixture.spool + "/" + segments[1])
        let gap = try await fixture.ctl(["verify"])
        #expect(gap.status == 1)
        #expect(gap.lines.contains("segment 2: segment missing or emptied (its unacknowledged events are lost)"), "\(gap.stdoutText)")
        let status = try await fixture.ctl(["status"])
        #expect(status.lines.contains { $0.hasPrefix("missing:      1 segments") }, "\(status.stdoutText)")

        try Data("damaged".utf8).write(to: URL(fileURLWithPath: sequenceFile))
        let damaged = try await fixture.ctl(["verify"])
        #expect(damaged.lines.contains { $0.hasPrefix("shipper.seq: damaged") }, "\(damaged.stdoutText)")
        try FileManager.default.removeItem(atPath: sequenceFile)
        let deleted = try await fixture.ctl(["verify"])
        #expect(deleted.lines.contains { $0.hasPrefix("shipper.seq: missing") }, "\(deleted.stdoutText)")

        try Data(repeating: 0x41, count: 64).write(to: URL(fileURLWithPath: fixture.spool + "/checkpoint"))
        let checkpoint = try await fixture.ctl(["verify"])
        #expect(checkpoint.status == 1)
        #expect(checkpoint.lines.contains { $0.contains("checkpoint damaged") }, "\(checkpoint.stdoutText)")
    }

    @Test func aHeldLockMeansReadOnlyAndSaysSo() async throws {
        let fixture = SpoolFixture()
        _ = try await fixture.write()
        let agent = try await fixture.open()
        try await agent.append([fixture.events[0]])
        let status = try await fixture.ctl(["status", "--json"])
        #expect(status.status == 0, "\(status.stderr)")
        #expect(status.stderr.contains("locked by a running agent"))
        let object = try #require(try JSONSerialization.jsonObject(with: status.stdout) as? [String: Any])
        #expect(object["events"] as? Int == 31)
        let export = try await fixture.ctl(["export"])
        #expect(export.status == 0)
        #expect(export.lines == (fixture.events + [fixture.events[0]]).map(\.jsonLine))
        let verify = try await fixture.ctl(["verify"])
        #expect(verify.status == 0)
        #expect(verify.stderr.contains("locked by a running agent"))
        try await agent.append([fixture.events[1]])
        #expect(try await agent.stats().events == 32, "the agent kept its lock and spool")
        await agent.close()

        let unlocked = try await fixture.ctl(["status"])
        #expect(unlocked.status == 0)
        #expect(unlocked.stderr.isEmpty)
    }

    @Test func missingSpoolIsARuntimeFailure() async throws {
        let outcome = try await BinaryRunner.run("tallyctl", ["spool", "status", "--spool", "/nonexistent/tally-spool"])
        #expect(outcome.status == 1)
        #expect(outcome.stderr == "tallyctl: no spool at /nonexistent/tally-spool (no such directory)\n")
    }
}

/// The four little-endian bytes of the CRC-32C of `bytes`.
func crcBytes(_ bytes: [UInt8]) -> [UInt8] {
    let crc = CRC32C.checksum(bytes)
    return (0..<4).map { UInt8(truncatingIfNeeded: crc >> UInt32(8 * $0)) }
}
