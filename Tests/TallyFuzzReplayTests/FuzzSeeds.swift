import Foundation
import NIOCore
import TallyCore
import TallyFuzzTargets
import TallyLedger
import TallySpool
import TallyWire
import Testing

/// The seeds of the fuzz corpus: valid inputs made by the real encoders (and the example
/// configs of `deploy/`), so that the fuzzer starts from the formats instead of from nothing.
/// `make fuzz-seeds` writes them as `seed-*` files into `FuzzTesting/Corpus/<target>/`.
@Suite("Fuzz seeds")
struct FuzzSeeds {
    @Test("every seed runs through its target")
    func seedsRun() async throws {
        for (target, seeds) in try await Self.all() {
            #expect(!seeds.isEmpty, "\(target.rawValue)")
            #expect(await run(target, seeds.map(\.bytes)) == seeds.count)
        }
    }

    @Test("write the seeds into the corpus", .enabled(if: ProcessInfo.processInfo.environment["TALLY_FUZZ_WRITE_SEEDS"] == "1"))
    func writeSeeds() async throws {
        for (target, seeds) in try await Self.all() {
            let folder = corpusDirectory.appendingPathComponent(target.rawValue)
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            for seed in seeds {
                try Data(seed.bytes).write(to: folder.appendingPathComponent("seed-\(seed.name)"))
            }
        }
    }

    static func all() async throws -> [(FuzzTarget, [(name: String, bytes: [UInt8])])] {
        [
            (.frameDecoder, try frames()),
            (.batchPayloadDecoder, try payloads()),
            (.spoolRecord, events.enumerated().map { ("event-\($0.offset)", EventRecordCodec.encode($0.element)) }),
            (.spoolRecovery, try await segments()),
            (.eventJSON, json()),
            (.pricingConfig, try configs("pricing.example.yaml", "demo-pricing.yaml")),
            (.agentConfig, try configs("agent.example.yaml") + [("minimal.yaml", Array("collectors: [127.0.0.1:7400]\n".utf8))]),
            (.collectorConfig, try configs("collector.example.yaml") + [("minimal.yaml", Array("store: sqlite:./ledger.db\n".utf8))]),
            (.aggregateLog, try aggregateLogs()),
        ]
    }

    static let time = EventTime(microseconds: 1_776_081_600_000_000)  // 2026-04-13T12:00:00Z

    /// Events with every kind of field: no id, UUID ids in both cases, a text id, whole and
    /// fractional quantities, properties.
    static let events: [UsageEvent] = [
        UsageEvent(tenant: "acme", metric: "api_calls", quantity: Quantity(nanos: 1_000_000_000), timestamp: time),
        UsageEvent(
            tenant: "acme", metric: "bytes_out", quantity: Quantity(nanos: 1_500_000_000), timestamp: EventTime(microseconds: time.microseconds + 1),
            id: "3f2c8a4e-1b2d-4c3e-9f10-0a1b2c3d4e5f", properties: Properties([("endpoint", "/v1/search"), ("region", "eu")])),
        UsageEvent(
            tenant: "globex", metric: "api_calls", quantity: Quantity(nanos: 42_000_000_000),
            timestamp: EventTime(microseconds: time.microseconds - 5),
            id: "3F2C8A4E-1B2D-4C3E-9F10-0A1B2C3D4E5F", properties: Properties([("endpoint", "/v1/items")])),
        UsageEvent(
            tenant: "globex", metric: "compute_ms", quantity: Quantity(nanos: -7), timestamp: time, id: "req-7",
            properties: Properties([("endpoint", "/v1/items"), ("status", "200")])),
    ]

    static func frames() throws -> [(name: String, bytes: [UInt8])] {
        let nonce = try #require(Nonce(bytes: (0..<32).map { UInt8($0) }))
        let proof = try #require(Proof(bytes: (0..<32).map { UInt8(255 - $0) }))
        let frames: [(String, Frame)] = [
            ("hello", .hello(Hello(minVersion: 1, maxVersion: 1, agentId: "agent-eu-1", agentNonce: nonce, software: "tally-agent/0.1.0"))),
            ("challenge", .challenge(Challenge(version: 1, collectorNonce: nonce))),
            ("auth", .auth(Auth(proof: proof))),
            ("welcome", .welcome(Welcome(authenticated: true, version: 1, proof: proof, limits: .standard))),
            ("welcome-open", .welcome(Welcome(authenticated: false, version: 1, proof: .none, limits: .standard))),
            ("batch", .batch(Batch(sequence: 42, payload: try BatchPayloadEncoder(compression: .none).encode(Array(events.prefix(2)))))),
            (
                "ack",
                .ack(
                    BatchAck(
                        sequence: 42, accepted: 5, duplicate: 2, late: 1, rejected: 2,
                        rejections: [.init(index: 3, reason: .futureTimestamp), .init(index: 7, reason: .tooOld)]))
            ),
            ("ack-malformed", .ack(.malformed(sequence: 43, declaredEvents: 1000))),
            ("error", .error(ErrorFrame(code: 3, message: "the proof is wrong"))),
            ("ping", .ping(0x0102_0304_0506_0708)),
            ("pong", .pong(0x0102_0304_0506_0708)),
            ("goaway", .goaway(GoAway(code: 1, retryAfterMilliseconds: 1500, message: "shutting down"))),
        ]
        var seeds = try frames.map { name, frame in (name + ".frame", Self.bytes(try FrameEncoder().encode(frame))) }
        seeds.append(("stream.frames", seeds.flatMap(\.1)))
        return seeds
    }

    static func payloads() throws -> [(name: String, bytes: [UInt8])] {
        [
            ("empty-raw.payload", bytes(try BatchPayloadEncoder(compression: .none).encode([]))),
            ("one-raw.payload", bytes(try BatchPayloadEncoder(compression: .none).encode([events[0]]))),
            ("all-raw.payload", bytes(try BatchPayloadEncoder(compression: .none).encode(events))),
            ("all-zstd.payload", bytes(try BatchPayloadEncoder(compression: .zstd(level: 3)).encode(events))),
        ]
    }

    /// Segment files written by a real spool: whole, with a torn last record, and empty.
    static func segments() async throws -> [(name: String, bytes: [UInt8])] {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tally-fuzz-seeds-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        var options = SpoolOptions()
        options.fsync = .never
        let spool = try await Spool.open(directory: directory.path, options: options)
        let empty = try Data(contentsOf: directory.appendingPathComponent("segment-00000000000000000001.tsp"))
        try await spool.append(events)
        await spool.close()
        let whole = [UInt8](try Data(contentsOf: directory.appendingPathComponent("segment-00000000000000000001.tsp")))
        return [("empty.tsp", [UInt8](empty)), ("four-events.tsp", whole), ("torn.tsp", Array(whole.dropLast(5)))]
    }

    static func json() -> [(name: String, bytes: [UInt8])] {
        let lines = events.map(\.jsonLine)
        let seed = #"{"user_id":"acme","endpoint":"/v1/search","units":3,"timestamp":"2026-04-13T12:00:00.250+02:00"}"#
        let escaped =
            #"{"tenant":"ac\u006de","metric":"api_calls","quantity":"2.5","timestamp":"2026-04-13T12:00:00Z","properties":{"ok":true,"n":1e3}}"#
        return [
            ("event.json", Array(lines[1].utf8)),
            ("user-id-shape.json", Array(seed.utf8)),
            ("escaped.json", Array(escaped.utf8)),
            ("array.json", Array(("[" + lines.joined(separator: ",") + "]").utf8)),
            ("events.ndjson", Array((lines.joined(separator: "\n") + "\n{\"tenant\":1}\n").utf8)),
        ]
    }

    /// The example configs of `deploy/`, without their comment lines.
    static func configs(_ names: String...) throws -> [(name: String, bytes: [UInt8])] {
        let deploy = corpusDirectory.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("deploy")
        return try names.map { name in
            let text = try String(contentsOf: deploy.appendingPathComponent(name), encoding: .utf8)
            let kept = text.split(separator: "\n").filter { !$0.trimmingCharacters(in: .whitespaces).hasPrefix("#") }
            return (name, Array((kept.joined(separator: "\n") + "\n").utf8))
        }
    }

    static func aggregateLogs() throws -> [(name: String, bytes: [UInt8])] {
        var cells = AggregateCells()
        for (index, event) in events.enumerated() {
            try cells.add(
                event, fingerprint: Fingerprint(high: UInt64(index), low: 7), billedIn: index == 3 ? BillingPeriod(year: 2026, month: 3) : nil,
                groupBy: ["endpoint"])
        }
        return [
            ("sectioned.log", AggregateLogCodec.encode(cells, layout: .byTenant)),
            ("flat.log", AggregateLogCodec.encode(cells, layout: .flat)),
            // The fixed-width layouts of schema version 5 (rows logged before an upgrade).
            ("sectioned-fixed.log", AggregateLogCodec.encode(cells, layout: .byTenant, fields: .levels)),
            ("flat-fixed.log", AggregateLogCodec.encode(cells, layout: .flat, fields: .levels)),
            ("empty.log", AggregateLogCodec.encode(AggregateCells(), layout: .byTenant)),
        ]
    }

    static func bytes(_ buffer: ByteBuffer) -> [UInt8] {
        Array(buffer.readableBytesView)
    }
}
