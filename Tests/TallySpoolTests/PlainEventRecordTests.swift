import TallyTestSupport
import Testing
import TallyCore
import TallyWorkload

@testable import TallySpool

/// The agent's byte path (`EventDecoder.scanPlain`, then the fingerprint and the spool record
/// from the line's bytes) against the decoder: a line it takes is one the decoder accepts, with
/// the same fingerprint and the same record bytes; a line it leaves goes the decoder's way.
@Suite(.offThePool) struct PlainEventRecordTests {
    static let now = EventTime(microseconds: 1_776_081_600_000_000)  // 2026-04-13T12:00:00Z
    static let decoders = [EventDecoder(), EventDecoder(defaultMetric: "api_calls")]

    /// Whether the byte path took `line`; records an issue when it disagrees with the decoder.
    @discardableResult
    static func check(_ line: UnsafeBufferPointer<UInt8>, _ decoder: EventDecoder, now: EventTime, plain: inout PlainEvent) -> Bool {
        guard decoder.scanPlain(line, now: now, into: &plain) else { return false }
        let text = String(decoding: line, as: UTF8.self)
        guard case .success(let event) = decoder.decodeLine(line, now: now) else {
            Issue.record("the byte path took a line the decoder rejects: \(text)")
            return true
        }
        var scratch: [UInt8] = []
        #expect(Fingerprint(of: plain, in: line, scratch: &scratch) == Fingerprint(of: event), "\(text)")
        var record: [UInt8] = []
        EventRecordCodec.encode(plain, in: line, into: &record)
        #expect(record == EventRecordCodec.encode(event), "\(text)")
        #expect((try? EventRecordCodec.decode(record)) == event, "\(text)")
        return true
    }

    static func check(_ text: String, _ decoder: EventDecoder = EventDecoder()) -> Bool {
        var plain = PlainEvent()
        return Array(text.utf8).withUnsafeBufferPointer { check($0, decoder, now: now, plain: &plain) }
    }

    @Test func theReferenceWorkloadTakesTheBytePathAndAgrees() throws {
        var workload = try ReferenceWorkload(WorkloadConfiguration(seed: 11, events: 30_000))
        var bytes: [UInt8] = []
        while workload.appendNextLine(to: &bytes) != nil {}
        let farFuture = EventTime(microseconds: .max / 2)
        for decoder in Self.decoders {
            var valid = 0
            var plainLines = 0
            var plain = PlainEvent()
            bytes.withUnsafeBufferPointer { buffer in
                forEachLine(buffer) { line in
                    if case .success = decoder.decodeLine(line, now: farFuture) { valid += 1 }
                    if Self.check(line, decoder, now: farFuture, plain: &plain) { plainLines += 1 }
                }
            }
            // Every valid line of the workload has the common shape: all go the byte way.
            #expect(valid > 29_000 && plainLines == valid, "valid \(valid), byte path \(plainLines)")
        }
    }

    static let base = #"{"tenant":"acme","metric":"api_calls","quantity":1.5,"timestamp":"2026-04-13T11:00:00Z""#

    @Test func theCommonShapesTakeIt() {
        for line in [
            Self.base + #","id":"req-1","properties":{"region":"eu","endpoint":"/v1/x","ok":true,"off":false}}"#,
            // Unsorted keys, no id (every field fingerprinted), an empty value, a quantity as a string.
            #"{"tenant":"acme","metric":"m","quantity":"2","timestamp":"2026-04-13T11:00:00Z","properties":{"z":"1","a":"","m":"x"}}"#,
            Self.base + "}", "  " + Self.base + #","properties":{}}  "#,
        ] {
            #expect(Self.check(line), "\(line)")
        }
    }

    /// What the byte path leaves to the decoder: the rare shapes, and every invalid event (so the
    /// rejection comes with the decoder's own reason and message).
    @Test func everythingElseGoesTheDecodersWay() {
        let long = String(repeating: "i", count: 129)
        for line in [
            Self.base + #","properties":{"status":200}}"#,  // a number property: its canonical text
            Self.base + #","id":"é"}"#,  // not ASCII
            #"{"tenant":"acme","quantity":1,"timestamp":"2026-04-13T11:00:00Z"}"#,  // default metric
            #"{"user_id":"u","units":1,"timestamp":"2026-04-13T11:00:00Z","endpoint":"/e"}"#,  // the seed's shape
            Self.base + #","id":"\#(long)"}"#, Self.base + #","id":""}"#, Self.base + ",\"id\":\"a\u{7F}\"}",
            #"{"tenant":"","metric":"m","quantity":1,"timestamp":"2026-04-13T11:00:00Z"}"#,
            #"{"tenant":"t","metric":"9m","quantity":1,"timestamp":"2026-04-13T11:00:00Z"}"#,
            #"{"tenant":"t","metric":"m","quantity":-1,"timestamp":"2026-04-13T11:00:00Z"}"#,
            #"{"tenant":"t","metric":"m","quantity":1e16,"timestamp":"2026-04-13T11:00:00Z"}"#,
            #"{"tenant":"t","metric":"m","quantity":1,"timestamp":"2026-04-13T12:05:01Z"}"#,  // future
            Self.base + #","properties":{"a":"1","a":"2"}}"#, Self.base + #","properties":{"bad key":"1"}}"#,
            Self.base + #","properties":{"k":"\#(String(repeating: "v", count: 257))"}}"#,
            Self.base + #","properties":{"#
                + (0..<33).map { "\"p\($0)\":\"v\"" }.joined(separator: ",") + "}}",
            Self.base + "} {}", Self.base + #","tenant":"again"}"#, Self.base + #","extra":1}"#,
        ] {
            for decoder in Self.decoders { #expect(!Self.check(line, decoder), "\(line)") }
        }
    }

    /// One line with each byte deleted, replaced by a troublesome byte, or cut off there: the
    /// byte path never takes a line the decoder would not accept the same way.
    @Test func mutationsAgree() {
        let replacements: [UInt8] = [0x22, 0x5C, 0x2C, 0x7D, 0x7B, 0x20, 0x0A, 0x30, 0x2D, 0x78, 0x01, 0xFF, 0x7F, 0x65, 0x2E, 0x74]
        let bytes = Array((Self.base + #","id":"r-1","properties":{"b":"x","a":true}}"#).utf8)
        var plain = PlainEvent()
        for decoder in Self.decoders {
            var taken = 0
            func check(_ line: [UInt8]) {
                if line.withUnsafeBufferPointer({ Self.check($0, decoder, now: Self.now, plain: &plain) }) { taken += 1 }
            }
            for position in 0..<bytes.count {
                var deleted = bytes
                deleted.remove(at: position)
                check(deleted)
                check(Array(bytes[..<position]))
                for replacement in replacements where replacement != bytes[position] {
                    var replaced = bytes
                    replaced[position] = replacement
                    check(replaced)
                }
            }
            #expect(taken > 100)
        }
    }

    @Test func anEncodedBatchOfPlainEventsIsWhatTheEventsMake() throws {
        let lines = [Self.base + #","id":"a"}"#, Self.base + #","properties":{"k":"v"}}"#]
        var fromBytes = EncodedBatch()
        var plain = PlainEvent()
        var events: [UsageEvent] = []
        for text in lines {
            try Array(text.utf8).withUnsafeBufferPointer { line throws(SpoolError) in
                #expect(EventDecoder().scanPlain(line, now: Self.now, into: &plain))
                try fromBytes.append(plain, in: line)
                if case .success(let event) = EventDecoder().decodeLine(line, now: Self.now) { events.append(event) }
            }
        }
        let fromEvents = try EncodedBatch(events)
        #expect(fromBytes.count == 2 && fromBytes.bytes == fromEvents.bytes)
        #expect(fromBytes.recordEnds == fromEvents.recordEnds && fromBytes.timestamps == fromEvents.timestamps)
    }
}
