import TallyTestSupport
import Testing
@testable import TallyCore

/// The direct (byte-level) event path must give exactly the full path's result — event, or
/// rejection with the same reason, field and message — for every input, valid or not.
@Suite(.offThePool) struct DirectEventScannerTests {
    let now = EventTime(microseconds: 1_776_081_600_000_000)  // 2026-04-13T12:00:00Z

    static let seeds: [String] = [
        #"{"tenant": "acme", "metric": "api_calls", "quantity": 1, "timestamp": "2026-04-13T12:00:00Z", "id": "req-7f3a", "properties": {"endpoint": "/api/v1/search", "region": "eu"}}"#,
        #"{ "user_id": "123", "endpoint": "/api/v1/search", "units": 1, "timestamp": "2026-04-13T12:00:00Z"}"#,
        #"{"user_id":"u","units":"2.5","timestamp":"2026-04-13T11:00:00+02:00","metric":"m.x","properties":{"endpoint":"/e"},"endpoint":"/f"}"#,
        #"{"tenant":"t","metric":"m","quantity":"0.25","timestamp":"2026-04-13T12:00:00.000001Z","id":"é","properties":{"status":200,"ok":true,"f":false,"big":1e3,"frac":0.50,"neg":-0.0}}"#,
        #"{"tenant":"a\"b","metric":"m","quantity":1,"timestamp":"2026-04-13T12:00:00Z","properties":{"k\u0041":"v\n"}}"#,
        #"{"tenant":"t","metric":null,"quantity":1,"timestamp":"2026-04-13T12:00:00Z","id":null}"#,
        #"{"tenant":"t","metric":"m","quantity":1,"timestamp":"2026-04-13T12:10:00Z"}"#,
        #"{"tenant":"t","metric":"m","quantity":-1,"timestamp":"2026-04-13T12:00:00Z"}"#,
        #"{"tenant":"t","metric":"m","quantity":1e30,"timestamp":"2026-04-13T12:00:00Z"}"#,
        #"{"tenant":"","metric":"9m","quantity":1.0000000001,"timestamp":"2026-04-13T12:00:00.0000001Z"}"#,
        #"{"tenant":"t","user_id":"u","metric":"m","quantity":1,"timestamp":"2026-04-13T12:00:00Z"}"#,
        #"{"tenant":"t","tenant":"u","metric":"m","quantity":1,"timestamp":"2026-04-13T12:00:00Z"}"#,
        #"{"tenant":"t","metric":"m","quantity":1,"timestamp":"2026-04-13T12:00:00Z","properties":{"a":"1","a":"2"}}"#,
        #"{"tenant":"t","metric":"m","quantity":1,"timestamp":"2026-04-13T12:00:00Z","properties":{"a":{"b":1},"c":[1]}}"#,
        #"{"tenant":"t","metric":"m","quantity":1,"timestamp":"2026-04-13T12:00:00Z","properties":{"bad key":"x","z":"\u007f"}}"#,
        #"{"tenant":"Zürich ☃","metric":"m","quantity":true,"timestamp":"2026-04-13T12:00:00Z"}"#,
        #"  {"tenant" : "t" , "metric":"m"  ,"quantity": 12 , "timestamp":"2026-04-13T12:00:00Z" }  "#,
        #"{"tenant":"t","metric":"m","quantity":1,"timestamp":"2026-04-13T12:00:00Z","extra":1}"#,
        #"{"tenant":"t","quantity":1,"timestamp":"2026-04-13T12:00:00Z","properties":{}}"#,
        #"{"tenant":"t","metric":"m","quantity":1,"timestamp":"2026-02-30T12:00:00Z"}"#,
        #"{"tenant":"t","metric":"m","quantity":01,"timestamp":"2026-04-13T12:00:00Z"}"#,
        #"{"tenant":"t","metric":"m","quantity":"1e3","timestamp":"2026-04-13T12:00:00Z","id":"\ud83d\ude00"}"#,
        "{}", "[]", "null", "1", "\"x\"", "{\"tenant\":\"t\",}", "[{\"tenant\":\"t\"}]",
    ]

    static let manyProperties =
        "{\"tenant\":\"t\",\"metric\":\"m\",\"quantity\":1,\"timestamp\":\"2026-04-13T12:00:00Z\",\"properties\":{"
        + (0..<33).map { "\"p\($0)\":\"v\"" }.joined(separator: ",") + "}}"
    static let longId =
        "{\"tenant\":\"t\",\"metric\":\"m\",\"quantity\":1,\"timestamp\":\"2026-04-13T12:00:00Z\",\"id\":\""
        + String(repeating: "i", count: 129) + "\"}"

    static let decoders = [EventDecoder(), EventDecoder(defaultMetric: "api_calls")]

    func expectAgreement(_ bytes: [UInt8], sourceLocation: SourceLocation = #_sourceLocation) {
        for decoder in Self.decoders {
            bytes.withUnsafeBufferPointer { buffer in
                let direct = decoder.decodeLine(buffer, now: now)
                let full = decoder.decodeLineFullPath(buffer, now: now)
                #expect(direct == full, "line \(String(decoding: bytes, as: UTF8.self))", sourceLocation: sourceLocation)
                let body = decoder.decodeBody(buffer, now: now, direct: true)
                let fullBody = decoder.decodeBody(buffer, now: now, direct: false)
                #expect(body == fullBody, "body \(String(decoding: bytes, as: UTF8.self))", sourceLocation: sourceLocation)
            }
        }
    }

    @Test func seedsAgree() {
        for seed in Self.seeds + [Self.manyProperties, Self.longId] { expectAgreement(Array(seed.utf8)) }
    }

    @Test func theDirectPathTakesThePlainCases() {
        // The plain shapes must really go the direct way (else this suite proves little).
        for seed in [Self.seeds[0], Self.seeds[1], Self.seeds[3]] {
            let bytes = Array(seed.utf8)
            let scanned = bytes.withUnsafeBufferPointer { buffer in
                DirectEventScanner.scan(buffer, from: 0, defaultMetric: "api_calls", maxProperties: 32)
            }
            #expect(scanned != nil, "\(seed)")
        }
    }

    @Test func bodiesOfSeveralLinesAgree() {
        let good = Self.seeds[0]
        let bodies = [
            good + "\n" + good, good + "\r\n" + Self.seeds[7] + "\n\n{not json\n" + good, good + " " + good,
            "{\n  \"tenant\": \"t\",\n  \"metric\": \"m\",\n  \"quantity\": 1,\n  \"timestamp\": \"2026-04-13T12:00:00Z\"\n}\n",
            good + "\n{\n\"tenant\":\"t\"}\n", Self.seeds[1] + "\n" + Self.seeds[5] + "\n" + Self.seeds[3],
        ]
        for body in bodies { expectAgreement(Array(body.utf8)) }
    }

    /// Every seed with each byte deleted, replaced by a troublesome byte, or cut off there.
    @Test func mutationsAgree() {
        let replacements: [UInt8] = [0x22, 0x5C, 0x2C, 0x7D, 0x7B, 0x20, 0x0A, 0x30, 0x2D, 0x78, 0x01, 0xFF, 0xC3, 0x7F, 0x65, 0x2E]
        for seed in Self.seeds.prefix(5) + [Self.seeds[15]] {
            let bytes = Array(seed.utf8)
            for position in 0..<bytes.count {
                var deleted = bytes
                deleted.remove(at: position)
                expectAgreement(deleted)
                expectAgreement(Array(bytes[..<position]))
                for replacement in replacements where replacement != bytes[position] {
                    var replaced = bytes
                    replaced[position] = replacement
                    expectAgreement(replaced)
                }
            }
        }
    }
}
