import Testing
import TallyCore
@testable import TallySpool

@Suite struct EventRecordCodecTests {
    @Test func roundTripsEveryField() throws {
        let events =
            (0..<50).map(sampleEvent) + [
                UsageEvent(tenant: "ü-tenant", metric: "bytes_out", quantity: Quantity(nanos: Int128.max), timestamp: EventTime(microseconds: .min)),
                UsageEvent(
                    tenant: "t", metric: "m", quantity: Quantity(nanos: Int128.min), timestamp: EventTime(microseconds: .max), id: "",
                    properties: Properties([("k", "")])),
                UsageEvent(tenant: "t", metric: "m", quantity: Quantity(nanos: -1), timestamp: EventTime(microseconds: -1)),
            ]
        for event in events {
            let bytes = EventRecordCodec.encode(event)
            #expect(try EventRecordCodec.decode(bytes) == event)
        }
    }

    @Test func smallEventsAreCompact() {
        let event = UsageEvent(
            tenant: "acme", metric: "api_calls", quantity: Quantity(1), timestamp: EventTime(seconds: 1_776_081_600), id: "req-7f3a")
        #expect(EventRecordCodec.encode(event).count <= 40, "the JSON of this event is about 100 bytes")
    }

    @Test func refusesDamagedPayloads() {
        let good = EventRecordCodec.encode(sampleEvent(3))
        #expect(throws: SpoolDecodingError.self) { try EventRecordCodec.decode(good + [0]) }
        #expect(throws: SpoolDecodingError.self) { try EventRecordCodec.decode(Array(good.dropLast())) }
        var badVersion = good
        badVersion[0] = 9
        #expect(throws: SpoolDecodingError.self) { try EventRecordCodec.decode(badVersion) }
        var badFlags = good
        badFlags[1] = 0x80
        #expect(throws: SpoolDecodingError.self) { try EventRecordCodec.decode(badFlags) }
        #expect(throws: SpoolDecodingError.self) { try EventRecordCodec.decode([1, 0] + [UInt8](repeating: 0xFF, count: 30)) }
        // Every truncation and every single-byte change either fails or decodes to some event: never a crash.
        for cut in 0..<good.count { _ = try? EventRecordCodec.decode(Array(good[0..<cut])) }
        for index in good.indices {
            var flipped = good
            flipped[index] ^= 0xFF
            _ = try? EventRecordCodec.decode(flipped)
        }
    }

    @Test func framingCRCCoversLengthAndPayload() {
        var framed: [UInt8] = []
        RecordFraming.appendRecord(encoding: { EventRecordCodec.encode(sampleEvent(1), into: &$0) }, to: &framed)
        let valid = framed.withUnsafeBytes { RecordFraming.candidate($0, fileRemaining: framed.count) }
        #expect(valid == .valid(payloadBytes: framed.count - 8))
        for index in framed.indices {
            var flipped = framed
            flipped[index] ^= 0x01
            let result = flipped.withUnsafeBytes { RecordFraming.candidate($0, fileRemaining: flipped.count) }
            #expect(result != valid, "a flip at byte \(index) went unnoticed")
        }
    }

    @Test func checkpointRoundTripsAndRejectsDamage() {
        let position = SpoolPosition(segment: 7, offset: 12_345)
        let bytes = Checkpoint.encode(position)
        #expect(Checkpoint.decode(bytes) == position)
        var damaged = bytes
        damaged[10] ^= 1
        #expect(Checkpoint.decode(damaged) == nil)
        #expect(Checkpoint.decode([]) == nil)
    }
}
