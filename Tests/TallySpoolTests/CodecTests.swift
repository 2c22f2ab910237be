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

    /// The shipper reads records as spans (``EventSpans``) instead of events: the same events
    /// come out, and exactly the payloads the event decoder refuses are refused — a refused one
    /// (quarantined by the read) adds nothing to the spans.
    @Test func spansDecodeExactlyWhatTheEventDecoderDecodes() throws {
        // Properties out of order or repeated, written by hand (the encoder sorts them).
        func record(keys: [String]) -> [UInt8] {
            var out: [UInt8] = [EventRecordCodec.version, 0]
            out.appendVarint(ZigZag.encode(Int64(1_776_081_600_000_000)))
            out.appendVarint(ZigZag.encode(Int128(1_000_000_000)))
            out.appendVarintString("t")
            out.appendVarintString("m")
            out.appendVarint(UInt64(keys.count))
            for key in keys {
                out.appendVarintString(key)
                out.appendVarintString("v")
            }
            return out
        }
        let events =
            (0..<40).map(sampleEvent) + [
                UsageEvent(tenant: "ü-tenant", metric: "bytes_out", quantity: Quantity(nanos: Int128.max), timestamp: EventTime(microseconds: .min)),
                UsageEvent(
                    tenant: "café", metric: "cafe\u{301}", quantity: Quantity(nanos: -1), timestamp: EventTime(microseconds: -1), id: "",
                    properties: Properties([("k", ""), ("ключ", "значение"), ("é", "e\u{301}")])),
            ]
        var payloads = events.map { EventRecordCodec.encode($0) }
        payloads += [
            record(keys: ["a", "b"]), record(keys: ["b", "a"]), record(keys: ["a", "a"]), [0xC3, 0x28], [1, 0, 0, 0, 1, 0xFF, 1, 0x6D, 0],
        ]
        for good in payloads.prefix(6) + payloads.suffix(4) {
            for cut in 0..<good.count { payloads.append(Array(good[0..<cut])) }
            for index in good.indices {
                for change: UInt8 in [0xFF, 0x80, 0x01] {
                    var changed = good
                    changed[index] ^= change
                    payloads.append(changed)
                }
            }
        }
        var spans = EventSpans()
        var decoded = 0
        for payload in payloads {
            let event = try? EventRecordCodec.decode(payload)
            let before = (spans.count, spans.properties.count, spans.bytes.count)
            let added = (try? payload.withBytes { bytes throws(SpoolDecodingError) in try EventRecordCodec.decode(bytes, into: &spans) }) != nil
            #expect(added == (event != nil), "\(payload)")
            if let event, added {
                decoded += 1
                #expect(spans.usageEvent(spans.count - 1) == event)
                // Byte for byte (`String` equality is canonical equivalence).
                #expect(EventRecordCodec.encode(spans.usageEvent(spans.count - 1)) == EventRecordCodec.encode(event))
            } else {
                #expect(spans.count == before.0 && spans.properties.count == before.1 && spans.bytes.count == before.2)
            }
        }
        #expect(decoded > events.count && decoded < payloads.count)
        #expect(spans.usageEvents.prefix(events.count) == events[...])
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
