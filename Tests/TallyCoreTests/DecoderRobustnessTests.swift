import TallyCore
import TallyWorkload
import TallyTestSupport
import Testing

/// Whatever bytes arrive, the JSON parser and the event decoder answer with an event or a
/// rejection that has a reason — never a crash, a hang or a stack overflow. Deterministic
/// (seeded), so a failure reproduces.
@Suite(.offThePool) struct DecoderRobustnessTests {
    static let valid = [
        #"{"tenant":"t0001","metric":"api_calls","quantity":1,"timestamp":"2026-11-21T10:00:00.123456Z","id":"req-1","properties":{"endpoint":"/v1/search","region":"eu","status":"200"}}"#,
        #"{"tenant":"acme","metric":"bytes_out","quantity":"12345.000000001","timestamp":"2026-11-21T10:00:00Z","properties":{"endpoint":"/v1/items"}}"#,
        #"{"user_id":"acme","endpoint":"/v1/search","units":3,"timestamp":"2026-11-21T10:00:00+02:00","id":"k-9"}"#,
        #"{"tenant":"a\u00e9\ud83d\ude00","metric":"m","quantity":0,"timestamp":"2026-11-21T10:00:00Z","id":"\"quoted\" \/"}"#,
    ]

    static let insertions = Array(#"{}[]",:\"9-.eE"#.utf8) + [0x00, 0xFF]

    let decoder = EventDecoder(defaultMetric: "api_calls")
    let now = (try? EventTime(parsing: "2026-11-21T12:00:00Z")) ?? EventTime(microseconds: 0)

    /// Every answer is an event that passes validation, or a rejection with a message.
    func check(_ results: [Result<UsageEvent, EventRejection>]) {
        for result in results {
            switch result {
            case .success(let event):
                #expect(throws: Never.self) { try event.validate(limits: .standard, now: now) }
                _ = Fingerprint(of: event)
            case .failure(let rejection):
                #expect(!rejection.message.isEmpty)
            }
        }
    }

    @Test func theValidLinesDecode() {
        for line in Self.valid {
            let results = decoder.decodeBody(Array(line.utf8), now: now)
            guard case .success? = results.first else {
                Issue.record("\(line) did not decode: \(results)")
                continue
            }
        }
    }

    @Test func mutatedLinesNeverCrash() {
        var random = WorkloadRandom(seed: 20261121)
        for round in 0..<20_000 {
            var bytes = Array(Self.valid[round % Self.valid.count].utf8)
            for _ in 0..<(1 + Int(random.next() % 4)) {
                let position = bytes.isEmpty ? 0 : Int(random.next() % UInt64(bytes.count))
                switch random.next() % 5 {
                case 0 where !bytes.isEmpty: bytes[position] ^= UInt8(1 << (random.next() % 8))
                case 1 where !bytes.isEmpty: bytes.remove(at: position)
                case 2: bytes.insert(Self.insertions[Int(random.next() % UInt64(Self.insertions.count))], at: position)
                case 3 where !bytes.isEmpty: bytes.insert(contentsOf: bytes[position..<min(bytes.count, position + 12)], at: position)
                default: bytes = Array(bytes[0..<position])
                }
            }
            check(decoder.decodeBody(bytes, now: now))
            bytes.withUnsafeBufferPointer { check([decoder.decodeLine($0, now: now)]) }
            _ = try? JSONParser.parse(bytes)
        }
    }

    @Test func randomBytesNeverCrash() {
        var random = WorkloadRandom(seed: 7)
        let alphabet = Array(#"{}[]":,0123456789.-+eEtrufalsn\ u"#.utf8) + [0x00, 0x0A, 0xC3, 0xA9, 0xF0, 0x9F, 0xFF]
        for _ in 0..<20_000 {
            let count = Int(random.next() % 200)
            let bytes = (0..<count).map { _ in alphabet[Int(random.next() % UInt64(alphabet.count))] }
            check(decoder.decodeBody(bytes, now: now))
            _ = try? JSONParser.parse(bytes)
        }
    }

    @Test func deepNestingAndHugeTokensAreErrors() {
        for body in [
            String(repeating: "[", count: 200_000),
            String(repeating: #"{"a":"#, count: 100_000),
            "[" + String(repeating: "1,", count: 100_000) + "1]",
            #"{"tenant":"acme","metric":"m","quantity":"# + String(repeating: "9", count: 100_000) + #","timestamp":"2026-11-21T10:00:00Z"}"#,
            #"{"tenant":""# + String(repeating: "x", count: 1_000_000) + #"","metric":"m","quantity":1,"timestamp":"2026-11-21T10:00:00Z"}"#,
        ] {
            let results = decoder.decodeBody(Array(body.utf8), now: now)
            check(results)
            #expect(results.allSatisfy { if case .failure = $0 { true } else { false } }, "\(body.prefix(40))")
        }
    }
}
