import TallyCore
import TallySpool
import TallyWire
import Testing

@testable import TallyAgent

/// The agent encodes its batches on a thread of its own at background priority, so that the
/// API server beside it (and its own ingest) gets the core first while a backlog drains.
@Suite struct BatchEncodingTests {
    static func events(_ count: Int) throws -> [UsageEvent] {
        try (0..<count).map { index in
            UsageEvent(
                tenant: "t\(index % 7)", metric: "api_calls", quantity: try Quantity(parsing: "\(index % 13 + 1)"),
                timestamp: EventTime(microseconds: 1_776_000_000_000_000 + Int64(index) * 1_000), id: "e-\(index)",
                properties: Properties([("region", index.isMultiple(of: 2) ? "eu" : "us")]))
        }
    }

    @Test func batchesAreTheEncodersOwnAndEncodedAtBackgroundPriority() async throws {
        let callerBefore = BackgroundPriority.currentThreadNiceness()
        let encoding = BatchEncoding(encoder: try BatchPayloadEncoder(compression: .zstd(level: 3)))
        let reference = try BatchPayloadEncoder(compression: .zstd(level: 3))
        for (sequence, count) in [(1, 1), (2, 1_000), (3, 37)] {
            let events = try Self.events(count)
            let batch = try await encoding.encode(sequence: UInt64(sequence), events: EventRecordCodec.spans(of: events))
            #expect(batch == (try AgentSession.OutgoingBatch(sequence: UInt64(sequence), events: events, encoder: reference)))
        }
        // The encoding thread runs at the background nice value (or lower already); the
        // caller's thread keeps its own.
        #expect(try await encoding.threadNiceness() >= BackgroundPriority.niceness)
        #expect(try await encoding.threadName() == "tally-encode")
        #expect(BackgroundPriority.currentThreadNiceness() == callerBefore)
        await encoding.shutdown()
    }

    @Test func anEncodingAfterShutdownFailsInsteadOfHanging() async throws {
        let encoding = BatchEncoding(encoder: try BatchPayloadEncoder(compression: .none))
        await encoding.shutdown()
        await #expect(throws: (any Error).self) { _ = try await encoding.encode(sequence: 1, events: EventRecordCodec.spans(of: try Self.events(3))) }
    }
}
