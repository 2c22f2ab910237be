import NIOCore
import TallyCore
import TallyLedger
import TallyWire
import TallyTestSupport
import Testing

@testable import TallyCollector

/// Section 3: payloads. Each row's exact error from the payload decoder, and from a collector
/// connection: the error frame SPEC §5.4 names, the connection closed, the malformed-payload
/// counter moved, and nothing of the batch written — the same sequence sent again with a good
/// payload is then committed as new. Then a batch whose events fail validation one at a time:
/// the others are stored, the bad one is rejected on its own.
@Suite("Bad input: payloads", .serialized)
struct PayloadTableTests {
    static func decode(_ payload: [UInt8]) -> Result<[UsageEvent], WireError> {
        Result { () throws(WireError) in try BatchPayloadDecoder().decode(ByteBuffer(bytes: payload)) }
    }

    @Test(arguments: PayloadRows.rows)
    func decoder(_ row: PayloadRow) {
        switch Self.decode(row.payload) {
        case .success(let events): Issue.record("\(row.name): decoded \(events)")
        case .failure(let error): #expect(error == row.error, "\(row.name)")
        }
    }

    /// (Off the pool: the first use of the bombs compresses 64 MiB, seconds of a debug build.)
    @Test(.offThePool) func theHandWrittenPayloadIsValid() throws {
        let events = try Self.decode(PayloadBytes.envelope(columns: PayloadBytes.single)).get()
        #expect(
            events == [
                UsageEvent(
                    tenant: "acme", metric: "api_calls", quantity: Quantity(1), timestamp: EventTime(microseconds: PayloadBytes.time), id: "p-1")
            ])
        // The bomb rows are bombs: the frames decompress to 64 MiB, one of them without saying so.
        #expect(PayloadBytes.bomb.count < 1 << 20)
        #expect(!PayloadBytes.hiddenBomb.isEmpty && PayloadBytes.hiddenBomb.count < PayloadBytes.bomb.count)
        #expect(try ZstdDecompressor().decompress(PayloadBytes.hiddenBomb, maxOutputSize: 64 << 20).count == 64 << 20)
    }

    @Test(arguments: PayloadRows.rows)
    func collector(_ row: PayloadRow) async throws {
        let collector = try CollectorUnderTest()
        var connection = try await collector.open()
        let before = recentEvents(2)
        _ = try await collector.feed(&connection, try CollectorUnderTest.batchFrame(1, before))
        let bad = Frame.batch(Batch(sequence: 2, payload: ByteBuffer(bytes: row.payload)))
        let answer = try await collector.feed(&connection, try FrameEncoder().encode(bad))
        let receivedAfterError = try await collector.eventsReceived()
        // The agent keeps the batch; sent again (here: as it should have been) it is new.
        var again = try await collector.open()
        let resent = recentEvents(3, from: 10)
        let retry = try await collector.feed(&again, try CollectorUnderTest.batchFrame(2, resent))
        let malformed = collector.counter("tally_collector_malformed_payloads_total")
        let batches = collector.counter("tally_collector_batches_total")
        await collector.stop()
        #expect(answer.error == row.error, "\(row.name): \(answer)")
        #expect(answer.frames.count == 1 && answer.closed, "\(row.name)")
        #expect(malformed == 1, "\(row.name)")
        #expect(receivedAfterError == before.count, "\(row.name): nothing of the bad batch is written, nothing before it lost")
        #expect(retry.frames == [.ack(BatchAck(sequence: 2, accepted: 3))], "\(row.name): \(retry)")
        #expect(batches == 2)
    }

    static let validEvents: [UsageEvent] = [
        UsageEvent(tenant: "acme", metric: "api_calls", quantity: Quantity(1), timestamp: EventTime(microseconds: PayloadBytes.time), id: "t-1"),
        UsageEvent(
            tenant: "acme", metric: "api_calls", quantity: Quantity(2), timestamp: EventTime(microseconds: PayloadBytes.time + 1),
            id: "0f8fad5b-d9cb-469f-a165-70867728950e", properties: Properties([("region", "eu")])),
        UsageEvent(
            tenant: "globex", metric: "bytes_out", quantity: Quantity(nanos: 1_500_000_000), timestamp: EventTime(microseconds: PayloadBytes.time + 2)
        ),
    ]

    /// A valid payload cut at every offset: the header, the columns section or the UUID section
    /// is cut short, each named exactly (raw and zstd columns).
    @Test(arguments: [BatchPayloadEncoder.Compression.none, .zstd(level: 3)])
    func truncatedAtEveryOffset(_ compression: BatchPayloadEncoder.Compression) throws {
        var buffer = try BatchPayloadEncoder(compression: compression).encode(Self.validEvents)
        let read = buffer.readBytes(length: buffer.readableBytes)
        let bytes = try #require(read)
        #expect(Self.decode(bytes) == .success(Self.validEvents))
        let stored = Int(bytes[10]) << 24 | Int(bytes[11]) << 16 | Int(bytes[12]) << 8 | Int(bytes[13])
        #expect(bytes.count == 14 + stored + 16, "one UUID id")
        for cut in 0..<bytes.count {
            let expected =
                cut < 14
                ? "batch payload: shorter than its 14-byte header"
                : cut < 14 + stored ? "batch payload: the columns section is cut short" : "batch payload: the UUID section is cut short"
            #expect(Self.decode(Array(bytes[0..<cut])) == .failure(WireError(.malformedPayload, expected)), "cut at \(cut)")
        }
    }

    /// One event of a batch breaks a rule (SPEC §6 "Per-event rules"): `(name, event, reason,
    /// message)`, judged at 2026-01-15T12:00:00Z.
    static let ruleRows: [(String, UsageEvent, RejectionReason, String)] = {
        let base = UsageEvent(
            tenant: "acme", metric: "api_calls", quantity: Quantity(5), timestamp: EventTime(microseconds: PayloadBytes.time), id: "bad")
        func with(_ change: (inout UsageEvent) -> Void) -> UsageEvent {
            var event = base
            change(&event)
            return event
        }
        return [
            ("tenant empty", with { $0.tenant = "" }, .invalidField, "must not be empty"),
            ("tenant 129 bytes", with { $0.tenant = String(repeating: "t", count: 129) }, .limitExceeded, "is 129 bytes; the limit is 128"),
            ("tenant with a control character", with { $0.tenant = "ac\u{1}me" }, .invalidField, "contains a control character"),
            (
                "tenant outside the key's allow-list", with { $0.tenant = "initech" }, .invalidField,
                "tenant 'initech' is not allowed for this agent's key"
            ),
            (
                "metric not a name", with { $0.metric = "api calls" }, .invalidField,
                "'api calls' is not a valid name (a letter, then letters, digits, '_', '.', ':' or '-')"
            ),
            ("metric 65 bytes", with { $0.metric = "m" + String(repeating: "x", count: 64) }, .limitExceeded, "is 65 bytes; the limit is 64"),
            ("id empty (kind 3, length 0)", with { $0.id = "" }, .invalidField, "must not be empty"),
            ("id 129 bytes", with { $0.id = String(repeating: "i", count: 129) }, .limitExceeded, "is 129 bytes; the limit is 128"),
            ("id with a control character", with { $0.id = "a\u{7F}" }, .invalidField, "contains a control character"),
            ("quantity negative", with { $0.quantity = Quantity(nanos: -1) }, .invalidField, "must not be negative (got -0.000000001)"),
            (
                "quantity over 10^15", with { $0.quantity = Quantity(nanos: 1_000_000_000_000_000 * Quantity.nanosPerUnit + 1) }, .limitExceeded,
                "1000000000000000.000000001 exceeds the limit of 1000000000000000"
            ),
            (
                "33 properties", with { $0.properties = Properties((0..<33).map { ("p\($0)", "v") }) }, .limitExceeded,
                "33 properties exceed the limit of 32"
            ),
            (
                "property key not a name", with { $0.properties = Properties([("1x", "v")]) }, .invalidField,
                "'1x' is not a valid name (a letter, then letters, digits, '_', '.', ':' or '-')"
            ),
            (
                "property value 257 bytes", with { $0.properties = Properties([("region", String(repeating: "v", count: 257))]) }, .limitExceeded,
                "value is 257 bytes; the limit is 256"
            ),
            (
                "property value with a control character", with { $0.properties = Properties([("region", "e\nu")]) }, .invalidField,
                "contains a control character"
            ),
            (
                "timestamp before 0001", with { $0.timestamp = EventTime(microseconds: .min) }, .invalidField,
                "-290308-12-21T19:59:05.224192Z is outside the accepted range 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z"
            ),
            (
                "timestamp in the future", with { $0.timestamp = EventTime(microseconds: 1_768_478_700_000_001) }, .futureTimestamp,
                "2026-01-15T12:05:00.000001Z is after 2026-01-15T12:05:00Z: more than 5m ahead of the time it arrived (the allowed clock skew)"
            ),
            (
                "timestamp older than the late-arrival limit", with { $0.timestamp = EventTime(microseconds: 1_765_000_000_000_000) }, .tooOld,
                "2025-12-06T05:46:40Z is before 2025-12-11T12:00:00Z (arrival time minus the late-arrival limit)"
            ),
        ]
    }()

    /// The batch [good, bad, good] through the collector's ingest (decode, validate, commit):
    /// acked with two accepted and the bad one rejected at index 1 with its reason; the good
    /// ones are in the ledger, the bad one is kept apart with its reason and message.
    @Test(arguments: ruleRows.indices)
    func oneInvalidEventInABatch(_ index: Int) async throws {
        let (name, bad, reason, message) = Self.ruleRows[index]
        let collector = try CollectorUnderTest()
        let ingest = try BatchIngest(
            limits: .standard, eventLimits: .standard, ledger: collector.ledger, metrics: collector.metrics,
            clock: { EventTime(microseconds: 1_768_478_400_000_000) })  // 2026-01-15T12:00:00Z
        let good = [Self.validEvents[0], Self.validEvents[1]]
        let payload = try BatchPayloadEncoder().encode([good[0], bad, good[1]])
        let ack = try await ingest.process(Batch(sequence: 9, payload: payload), agent: "edge-1") { $0 != "initech" }
        let stored = try await collector.storedEvents(in: BillingPeriod(containing: good[0].timestamp))
        let refused = try await collector.refusedEvents(agent: "edge-1", sequence: 9)
        let accepted = collector.counter("tally_collector_events_total{status=\"accepted\"}")
        let rejected = collector.counter("tally_collector_events_total{status=\"rejected\"}")
        await collector.stop()
        #expect(ack == BatchAck(sequence: 9, accepted: 2, rejected: 1, rejections: [.init(index: 1, reason: reason)]), "\(name)")
        #expect(Set(stored) == Set(good), "\(name)")
        #expect(refused.map(\.batchIndex) == [1] && refused.first?.reason == reason, "\(name)")
        #expect(refused.first?.message == message, "\(name): \(refused.first?.message ?? "")")
        #expect(accepted == 2 && rejected == 1, "\(name)")
    }
}
