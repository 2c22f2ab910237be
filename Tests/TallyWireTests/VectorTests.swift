import Foundation
import NIOCore
import Testing
import TallyCore
@testable import TallyWire

/// The vectors in protocol/vectors/ are the contract with other implementations: every frame
/// and raw payload must decode to the stated values and re-encode to the same bytes.
/// `TALLY_WRITE_VECTORS=1 swift test --filter VectorTests` rewrites them from the fixtures.
@Suite struct VectorTests {
    static let directory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("protocol/vectors")
    static let rewrite = ProcessInfo.processInfo.environment["TALLY_WRITE_VECTORS"] == "1"

    static let payloadVectors: [(name: String, compression: BatchPayloadEncoder.Compression, events: [UsageEvent])] = [
        ("empty", .none, []),
        ("one-minimal", .none, [Fixtures.event()]),
        (
            "mixed", .none,
            [
                Fixtures.event(
                    tenant: "acme", id: "0f8fad5b-d9cb-469f-a165-70867728950e",
                    properties: [("endpoint", "/api/v1/search"), ("method", "GET"), ("region", "eu"), ("status", "200")]),
                Fixtures.event(
                    tenant: "globex", metric: "bytes_out", nanos: 48_213_000_000_000, at: 9_731,
                    id: "7C9E6679-7425-40DE-944B-E07FC1F90AE7", properties: [("endpoint", "/api/v1/export"), ("region", "us")]),
                Fixtures.event(tenant: "acme", nanos: 1_500_000_000, at: 8_000, id: "req-7f3a", properties: [("endpoint", "/api/v1/search")]),
                Fixtures.event(tenant: "Zürich-租户", metric: "compute_ms", nanos: 1, at: -2_000),
            ]
        ),
        ("huge-quantity", .none, [Fixtures.event(nanos: Int128.max), Fixtures.event(nanos: Int128.min, at: 1)]),
        (
            "zstd-mixed", .zstd(level: 3),
            (0..<20).map { index in
                Fixtures.event(
                    tenant: "tenant-\(index % 3)", at: Int64(index) * 10_000,
                    id: "00000000-0000-4000-8000-0000000000\(index < 10 ? "0" : "")\(index)",
                    properties: [("endpoint", "/api/v1/e\(index % 4)"), ("region", "eu")])
            }
        ),
    ]

    @Test func frameVectors() throws {
        let url = Self.directory.appendingPathComponent("frames.json")
        if Self.rewrite {
            var entries: [String] = []
            for (name, frame) in Fixtures.frames {
                let fields = Self.fields(of: frame).map { "      \(JSONWriter.quoted($0.0)): \(JSONWriter.quoted($0.1))" }
                entries.append(
                    "  {\n    \"name\": \(JSONWriter.quoted(name)),\n    \"type\": \"\(frame.type)\",\n    \"fields\": {\n"
                        + fields.joined(separator: ",\n") + "\n    },\n    \"hex\": \"\(Hex.encode(try Fixtures.bytes(frame)))\"\n  }")
            }
            try ("[\n" + entries.joined(separator: ",\n") + "\n]\n").write(to: url, atomically: true, encoding: .utf8)
        }
        let vectors = try Self.load(url)
        #expect(vectors.count == Fixtures.frames.count)
        for (name, frame) in Fixtures.frames {
            let hex = try #require(vectors[name]?["hex"], "vector \(name) is missing")
            let bytes = try #require(Hex.decode(hex))
            var buffer = ByteBuffer(bytes: bytes)
            var decoder = FrameDecoder()
            #expect(try decoder.decode(buffer: &buffer) == frame, "vector \(name) decodes to its fields")
            #expect(buffer.readableBytes == 0)
            #expect(try Fixtures.bytes(frame) == bytes, "vector \(name) re-encodes byte for byte")
        }
    }

    @Test func payloadVectors() throws {
        let url = Self.directory.appendingPathComponent("payloads.json")
        if Self.rewrite {
            var entries: [String] = []
            for (name, compression, events) in Self.payloadVectors {
                let payload = try BatchPayloadEncoder(compression: compression).encode(events)
                let lines = events.map { "      " + JSONWriter.quoted($0.jsonLine) }
                entries.append(
                    "  {\n    \"name\": \(JSONWriter.quoted(name)),\n    \"compression\": \"\(compression == .none ? "none" : "zstd")\",\n"
                        + "    \"events\": [" + (lines.isEmpty ? "" : "\n" + lines.joined(separator: ",\n") + "\n    ") + "],\n"
                        + "    \"hex\": \"\(Hex.encode(payload.readableBytesView))\"\n  }")
            }
            try ("[\n" + entries.joined(separator: ",\n") + "\n]\n").write(to: url, atomically: true, encoding: .utf8)
        }
        let vectors = try Self.load(url)
        #expect(vectors.count == Self.payloadVectors.count)
        let decoder = try BatchPayloadDecoder()
        for (name, compression, events) in Self.payloadVectors {
            let hex = try #require(vectors[name]?["hex"], "vector \(name) is missing")
            let bytes = ByteBuffer(bytes: try #require(Hex.decode(hex)))
            let decoded = try decoder.decode(bytes)
            #expect(decoded == events, "vector \(name) decodes to its events")
            #expect(decoded.map(\.jsonLine) == vectors[name]?["events"].map { $0.split(separator: "\n").map(String.init) } ?? [])
            // Compressed bytes depend on the zstd build; only raw payloads must match exactly.
            if compression == .none {
                #expect(try BatchPayloadEncoder(compression: .none).encode(events) == bytes, "vector \(name) re-encodes byte for byte")
            }
        }
    }

    /// name -> {"hex": ..., "events": lines joined by newlines}.
    static func load(_ url: URL) throws -> [String: [String: String]] {
        let data = try Data(contentsOf: url)
        guard case .array(let items) = try JSONParser.parse(Array(data)) else { throw VectorFileError() }
        var result: [String: [String: String]] = [:]
        for item in items {
            guard case .object(let members) = item else { throw VectorFileError() }
            var entry: [String: String] = [:]
            for member in members {
                switch member.value {
                case .string(let text): entry[member.key] = text
                case .array(let values):
                    entry[member.key] = values.compactMap { if case .string(let text) = $0 { text } else { nil } }.joined(separator: "\n")
                default: break
                }
            }
            if let name = entry["name"] { result[name] = entry }
        }
        return result
    }

    struct VectorFileError: Error {}

    /// The human-readable meaning of a frame, written beside its bytes.
    static func fields(of frame: Frame) -> [(String, String)] {
        switch frame {
        case .hello(let hello):
            [
                ("min_version", "\(hello.minVersion)"), ("max_version", "\(hello.maxVersion)"), ("agent_id", hello.agentId),
                ("agent_nonce", Hex.encode(hello.agentNonce.bytes)), ("software", hello.software),
            ]
        case .challenge(let challenge):
            [("version", "\(challenge.version)"), ("collector_nonce", Hex.encode(challenge.collectorNonce.bytes))]
        case .auth(let auth):
            [
                ("proof", Hex.encode(auth.proof.bytes)),
                ("derivation", "HMAC-SHA256(key \"s3cret\", transcript(\"tally/1 agent proof\", 1, \"agent-eu-1\", hello nonce, challenge nonce))"),
            ]
        case .welcome(let welcome):
            [
                ("authenticated", "\(welcome.authenticated)"), ("version", "\(welcome.version)"),
                ("proof", Hex.encode(welcome.proof.bytes)), ("max_frame_body", "\(welcome.limits.maxFrameBody)"),
                ("max_decompressed_bytes", "\(welcome.limits.maxDecompressedBytes)"),
                ("max_events_per_batch", "\(welcome.limits.maxEventsPerBatch)"), ("window", "\(welcome.limits.window)"),
            ]
        case .batch(let batch):
            [("sequence", "\(batch.sequence)"), ("payload", Hex.encode(batch.payload.readableBytesView))]
        case .ack(let ack):
            [
                ("sequence", "\(ack.sequence)"), ("status", "\(ack.status)"), ("accepted", "\(ack.accepted)"),
                ("duplicate", "\(ack.duplicate)"), ("late", "\(ack.late)"), ("rejected", "\(ack.rejected)"),
                ("rejections", ack.rejections.map { "\($0.index):\($0.reason.rawValue)" }.joined(separator: ",")),
            ]
        case .error(let error):
            [("code", "\(error.code) (\(error.wireError?.code.name ?? "unknown"))"), ("message", error.message)]
        case .ping(let opaque), .pong(let opaque):
            [("opaque", "0x" + String(opaque, radix: 16))]
        case .goaway(let goaway):
            [("code", "\(goaway.code)"), ("retry_after_ms", "\(goaway.retryAfterMilliseconds)"), ("message", goaway.message)]
        }
    }
}
