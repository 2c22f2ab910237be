import NIOCore
import Testing
import TallyWorkload
import TallyCore
@testable import TallyWire

@Suite struct PayloadTests {
    static let edgeEvents: [UsageEvent] = [
        Fixtures.event(),
        Fixtures.event(
            tenant: "t2", metric: "bytes_out", nanos: 1_234_567_890_123, at: 5, id: "req-7f3a", properties: [("endpoint", "/api/v1/search")]),
        Fixtures.event(nanos: 1, at: -3, id: "0f8fad5b-d9cb-469f-a165-70867728950e"),
        Fixtures.event(nanos: 0, at: 0, id: "0F8FAD5B-D9CB-469F-A165-70867728950E"),
        Fixtures.event(nanos: .max, at: 1_000_000, id: "0f8fad5b-D9CB-469f-a165-70867728950e"),  // mixed case: text
        Fixtures.event(nanos: .min, at: -1_000_000),
        Fixtures.event(nanos: -2_500_000_000, id: "", properties: [("", ""), ("z", "")]),
        Fixtures.event(tenant: "Zürich-租户-🚀", metric: "compute_ms", id: "ïd-ü", properties: [("région", "Île-de-France"), ("emoji", "😀")]),
        UsageEvent(tenant: "x", metric: "m", quantity: .zero, timestamp: EventTime(microseconds: .min)),
        UsageEvent(tenant: "x", metric: "m", quantity: .zero, timestamp: EventTime(microseconds: .max)),
        UsageEvent(tenant: "x", metric: "m", quantity: .zero, timestamp: EventTime(microseconds: 0), id: "12345678-1234-1234-1234-123456789012"),
    ]

    @Test(arguments: [BatchPayloadEncoder.Compression.none, .zstd(level: 1), .zstd(level: 3)])
    func roundTripEdgeValues(compression: BatchPayloadEncoder.Compression) throws {
        let encoder = try BatchPayloadEncoder(compression: compression)
        let decoder = try BatchPayloadDecoder()
        let payload = try encoder.encode(Self.edgeEvents)
        #expect(try decoder.decode(payload) == Self.edgeEvents)
        // One at a time too: each event alone in a batch.
        for event in Self.edgeEvents { #expect(try decoder.decode(try encoder.encode([event])) == [event]) }
        #expect(BatchPayloadDecoder.declaredEventCount(payload) == UInt32(Self.edgeEvents.count))
    }

    /// SPEC §5.1: the columns section is one zstd frame. Two concatenated frames (which zstd
    /// itself would happily decode as one stream) are a malformed payload.
    @Test func twoConcatenatedZstdFramesAreMalformed() throws {
        let events = (0..<40).map { Fixtures.event(at: Int64($0), id: "req-\($0)") }
        var raw = try BatchPayloadEncoder(compression: .none).encode(events)
        let header = (
            raw.readInteger(as: UInt8.self), raw.readInteger(as: UInt32.self), raw.readInteger(as: UInt8.self),
            raw.readInteger(as: UInt32.self), raw.readInteger(as: UInt32.self)
        )
        let version = try #require(header.0)
        let count = try #require(header.1)
        let rawLength = try #require(header.3)
        let read = raw.readBytes(length: Int(rawLength))
        let columns = try #require(read)
        let compressor = try ZstdCompressor(level: 3)
        let half = columns.count / 2
        let stored = try compressor.compress(Array(columns[..<half])) + compressor.compress(Array(columns[half...]))
        var forged = ByteBuffer()
        forged.writeInteger(version)
        forged.writeInteger(count)
        forged.writeInteger(UInt8(1))
        forged.writeInteger(rawLength)
        forged.writeInteger(UInt32(stored.count))
        forged.writeBytes(stored)
        forged.writeBuffer(&raw)
        let error = #expect(throws: WireError.self) { try BatchPayloadDecoder().decode(forged) }
        #expect(error?.code == .malformedPayload)
        #expect(error?.message.contains("bytes follow the frame") == true, "\(String(describing: error))")
        // The same columns as one frame decode.
        var single = ByteBuffer()
        single.writeInteger(version)
        single.writeInteger(count)
        single.writeInteger(UInt8(1))
        single.writeInteger(rawLength)
        let frame = try compressor.compress(columns)
        single.writeInteger(UInt32(frame.count))
        single.writeBytes(frame)
        #expect(try BatchPayloadDecoder().decode(single) == events)
    }

    @Test func emptyBatch() throws {
        let payload = try BatchPayloadEncoder(compression: .none).encode([])
        #expect(try BatchPayloadDecoder().decode(payload) == [])
    }

    @Test func uuidIdsTravelAsSixteenBytes() throws {
        let encoder = try BatchPayloadEncoder(compression: .none)
        let uuid = try encoder.encode([Fixtures.event(id: "0f8fad5b-d9cb-469f-a165-70867728950e")])
        let text = try encoder.encode([Fixtures.event(id: "0f8fad5b-d9cb-469f-a165-70867728950g")])
        #expect(text.readableBytes - uuid.readableBytes == 37 - 16)
    }

    /// A canonical UUID's 16 bytes travel in the order its hex digits are written, and come
    /// back as the same text in its own case; mixed case, or a hyphen out of place, stays text.
    @Test func uuidBytesAreTheDigitsInOrder() throws {
        let encoder = try BatchPayloadEncoder(compression: .none)
        let digits: [UInt8] = [0x0F, 0x8F, 0xAD, 0x5B, 0xD9, 0xCB, 0x46, 0x9F, 0xA1, 0x65, 0x70, 0x86, 0x77, 0x28, 0x95, 0x0E]
        for id in ["0f8fad5b-d9cb-469f-a165-70867728950e", "0F8FAD5B-D9CB-469F-A165-70867728950E"] {
            let payload = try encoder.encode([Fixtures.event(id: id)])
            let bytes = Array(payload.readableBytesView)
            #expect(bytes.indices.contains { bytes[$0...].starts(with: digits) }, "\(id)")
            #expect(try BatchPayloadDecoder().decode(payload).first?.id == id)
        }
        for id in ["0f8fad5b-d9cb-469f-a165-70867728950E", "0f8fad5bd-9cb-469f-a165-70867728950e", "0f8fad5b-d9cb-469f-a165-70867728950"] {
            let payload = try encoder.encode([Fixtures.event(id: id)])
            #expect(!Array(payload.readableBytesView).indices.contains { Array(payload.readableBytesView)[$0...].starts(with: digits) })
            #expect(try BatchPayloadDecoder().decode(payload).first?.id == id)
        }
    }

    /// Every one-character change of a canonical UUID, at every position: sent as 16 bytes
    /// exactly when the text is still canonical (hyphens at 8, 13, 18 and 23, hex digits
    /// elsewhere, not both lowercase and uppercase letters), and always back as the same text.
    @Test func anIdIsSentAsBytesExactlyWhenItIsACanonicalUUID() throws {
        let encoder = try BatchPayloadEncoder(compression: .none)
        let base = Array("0f8fad5b-d9cb-469f-a165-70867728950e")
        let bytesSize = try encoder.encode([Fixtures.event(id: String(base))]).readableBytes
        func canonical(_ text: [Character]) -> Bool {
            guard text.count == 36 else { return false }
            var lower = false
            var upper = false
            for (position, character) in text.enumerated() {
                if [8, 13, 18, 23].contains(position) {
                    guard character == "-" else { return false }
                    continue
                }
                guard character.isASCII, character.isHexDigit else { return false }
                if character.isLowercase { lower = true }
                if character.isUppercase { upper = true }
            }
            return !(lower && upper)
        }
        var checked = 0
        for position in base.indices {
            for replacement: Character in ["0", "9", "a", "f", "A", "F", "g", "G", "-", " ", "é", "\u{7F}", "/", ":", "@", "`"] {
                var text = base
                text[position] = replacement
                let id = String(text)
                let payload = try encoder.encode([Fixtures.event(id: id)])
                #expect(try BatchPayloadDecoder().decode(payload).first?.id == id)
                #expect((payload.readableBytes == bytesSize) == canonical(text), "\(id)")
                checked += 1
            }
        }
        #expect(checked == 36 * 16)
    }

    /// String tables past the size searched by comparison (``BatchPayloadEncoder/Table``) keep
    /// their order — most used first, ties by first use — and every event comes back.
    @Test func largeTablesKeepTheirOrder() throws {
        var events: [UsageEvent] = []
        var uses: [String: (count: Int, first: Int)] = [:]
        for round in 0..<5 {
            for tenant in 0..<40 where tenant % 5 >= round {
                let name = "tenant-\(tenant)"
                events.append(Fixtures.event(tenant: name))
                uses[name, default: (0, events.count - 1)].count += 1
            }
        }
        let payload = try BatchPayloadEncoder(compression: .none).encode(events)
        #expect(try BatchPayloadDecoder().decode(payload) == events)
        var columns = payload
        columns.moveReaderIndex(forwardBy: BatchPayloadLayout.headerSize)
        let count = columns.readVarint()
        var table: [String] = []
        for _ in 0..<(count ?? 0) {
            guard let entry = columns.readVarintString() else { break }
            table.append(entry)
        }
        let expected = uses.sorted { $0.value.count != $1.value.count ? $0.value.count > $1.value.count : $0.value.first < $1.value.first }
        #expect(table == expected.map(\.key))
        #expect(table.count == 40)
    }

    /// `events` as spans of one buffer, as the agent's spool reader hands them to the encoder.
    static func spans(_ events: [UsageEvent]) -> EventSpans {
        var spans = EventSpans()
        func add(_ text: String) -> EventSpans.Span {
            let start = spans.bytes.count
            spans.bytes += Array(text.utf8)
            return EventSpans.Span(start: start, count: spans.bytes.count - start)
        }
        for event in events {
            let tenant = add(event.tenant)
            let metric = add(event.metric)
            let id = event.id.map(add)
            let first = spans.properties.count
            for property in event.properties { spans.properties.append(EventSpans.Property(key: add(property.key), value: add(property.value))) }
            spans.events.append(
                EventSpans.Event(
                    timestamp: event.timestamp, quantity: event.quantity, tenant: tenant, metric: metric, id: id,
                    properties: first..<spans.properties.count))
        }
        return spans
    }

    /// The shipper encodes stored records as spans, without a ``UsageEvent`` each: the payload
    /// is the same, byte for byte, as for the events — edge values, tables past the size
    /// searched by comparison (a thousand tenants), text and UUID ids, with and without zstd.
    @Test(arguments: [BatchPayloadEncoder.Compression.none, .zstd(level: 3)])
    func spansEncodeToTheEventsBytes(compression: BatchPayloadEncoder.Compression) throws {
        let encoder = try BatchPayloadEncoder(compression: compression)
        let workload = try ReferenceWorkload(
            WorkloadConfiguration(seed: 7, events: 6_000, start: EventTime(seconds: 1_776_000_000), rate: 1000))
        let generated = workload.compactMap(\.event)
        #expect(Set(generated.map(\.tenant)).count > BatchPayloadEncoder.Table<RawText>.scanLimit)
        for events in [Self.edgeEvents, generated, Array(generated.prefix(1)), []] {
            let payload = try encoder.encode(Self.spans(events))
            #expect(payload == (try encoder.encode(events)))
            #expect(try BatchPayloadDecoder().decode(payload) == events)
        }
    }

    /// Table entries are told apart by their bytes. Swift's `String` equality is canonical
    /// equivalence ("é" as one scalar equals "e" with a combining accent); a table keyed by it
    /// sent a batch's second spelling as the first one's bytes, so an event's fingerprint at the
    /// collector depended on the other events of its batch.
    @Test func canonicallyEquivalentSpellingsKeepTheirOwnBytes() throws {
        let composed = "caf\u{E9}"
        let decomposed = "cafe\u{301}"
        #expect(composed == decomposed && Array(composed.utf8) != Array(decomposed.utf8))
        let events = [composed, decomposed, composed].enumerated().map { index, text in
            Fixtures.event(tenant: text, metric: text, at: Int64(index), id: text, properties: [(text, text)])
        }
        let encoder = try BatchPayloadEncoder(compression: .none)
        for payload in [try encoder.encode(events), try encoder.encode(Self.spans(events))] {
            let decoded = try BatchPayloadDecoder().decode(payload)
            #expect(decoded.count == events.count)
            for (sent, received) in zip(events, decoded) {
                #expect(Array(received.tenant.utf8) == Array(sent.tenant.utf8))
                #expect(Array(received.metric.utf8) == Array(sent.metric.utf8))
                #expect(received.id.map { Array($0.utf8) } == sent.id.map { Array($0.utf8) })
                #expect(
                    received.properties.elements.map { Array($0.key.utf8) + [0] + Array($0.value.utf8) }
                        == sent.properties.elements.map { Array($0.key.utf8) + [0] + Array($0.value.utf8) })
            }
        }
    }

    @Test func encodingIsDeterministic() throws {
        let encoder = try BatchPayloadEncoder(compression: .zstd(level: 3))
        #expect(try encoder.encode(Self.edgeEvents) == encoder.encode(Self.edgeEvents))
    }

    @Test func tooManyEventsIsRefusedBeforeDecoding() throws {
        let payload = try BatchPayloadEncoder().encode(Array(repeating: Fixtures.event(), count: 11))
        var limits = SessionLimits.standard
        limits.maxEventsPerBatch = 10
        #expect(throws: WireError.self) { try BatchPayloadDecoder(limits: limits).decode(payload) }
        #expect(code(try BatchPayloadDecoder(limits: limits), payload) == .tooManyEvents)
    }

    @Test func declaredSizeOverTheCapIsRefused() throws {
        let payload = try BatchPayloadEncoder().encode(Array(repeating: Fixtures.event(), count: 100))
        var limits = SessionLimits.standard
        limits.maxDecompressedBytes = 100
        #expect(code(try BatchPayloadDecoder(limits: limits), payload) == .payloadTooLarge)
    }

    @Test func zstdBombIsRefused() throws {
        // 64 MiB of zeros compress to a few KiB; the header claims 1 KiB of columns.
        let bomb = try ZstdCompressor(level: 1).compress([UInt8](repeating: 0, count: 64 << 20))
        var payload = ByteBuffer()
        payload.writeInteger(BatchPayloadLayout.version)
        payload.writeInteger(UInt32(1))
        payload.writeInteger(BatchPayloadLayout.Encoding.zstd.rawValue)
        payload.writeInteger(UInt32(1024))
        payload.writeInteger(UInt32(bomb.count))
        payload.writeBytes(bomb)
        #expect(bomb.count < 1 << 20)
        #expect(code(try BatchPayloadDecoder(), payload) == .payloadTooLarge)
    }

    @Test func garbageIsMalformedNeverACrash() throws {
        let good = try BatchPayloadEncoder(compression: .none).encode(Self.edgeEvents)
        let bytes = good.getBytes(at: 0, length: good.readableBytes)!
        let decoder = try BatchPayloadDecoder()
        // Every truncation fails cleanly.
        for cut in 0..<bytes.count {
            #expect(throws: WireError.self) { try decoder.decode(ByteBuffer(bytes: bytes[0..<cut])) }
        }
        // Every single-byte change either fails with a WireError or decodes to valid events.
        var rng = SplitMix64(seed: 7)
        for position in 0..<bytes.count {
            var corrupt = bytes
            corrupt[position] = UInt8.random(in: 0...255, using: &rng)
            _ = try? decoder.decode(ByteBuffer(bytes: corrupt))
        }
        #expect(code(decoder, ByteBuffer(bytes: [9] + bytes.dropFirst())) == .unsupportedVersion)
        #expect(code(decoder, ByteBuffer(bytes: bytes + [0])) == .malformedPayload)
    }

    /// A `vstr` that is not UTF-8 (SPEC §1 conventions) makes the payload malformed: the
    /// decoder's ASCII fast path (`UTF8Text`) must not let it through.
    @Test func aStringThatIsNotUTF8IsMalformed() throws {
        let event = Fixtures.event(tenant: "t-é", metric: "api_calls", id: "plain")
        let good = try BatchPayloadEncoder(compression: .none).encode([event])
        var bytes = try #require(good.getBytes(at: 0, length: good.readableBytes))
        let decoder = try BatchPayloadDecoder()
        #expect(try decoder.decode(ByteBuffer(bytes: bytes)) == [event])
        let at = try #require((0..<(bytes.count - 1)).first { bytes[$0] == 0xC3 && bytes[$0 + 1] == 0xA9 })
        for invalid: [UInt8] in [[0xC3, 0x28], [0xFF, 0x41], [0xC0, 0xA9], [0x80, 0x41]] {
            bytes[at] = invalid[0]
            bytes[at + 1] = invalid[1]
            #expect(code(decoder, ByteBuffer(bytes: bytes)) == .malformedPayload, "\(invalid)")
        }
    }

    private func code(_ decoder: BatchPayloadDecoder, _ payload: ByteBuffer) -> WireErrorCode? {
        do throws(WireError) {
            _ = try decoder.decode(payload)
            return nil
        } catch {
            return error.code
        }
    }
}
