import TallyCore
import Testing
@testable import TallyLedger

/// ``PreparedBatch``: the per-event stored forms made ahead of the commit.
@Suite struct PreparedBatchTests {
    /// Every event's properties blob, kept in one buffer for the batch, reads back as the blob
    /// of that event alone: empty for an invalid event or one without properties, whole for
    /// multi-byte text and for a buffer that outgrows its first size.
    @Test func eachEventsPropertiesAreItsOwnBlob() throws {
        let long = String(repeating: "é", count: 300)
        let events: [IncomingEvent] = [
            .valid(event("acme", quantity: "1", id: "a", [("endpoint", "/v1/search"), ("region", "eu")])),
            .invalid(InvalidEvent(EventRejection(.malformed, field: nil, "not JSON"), tenant: "acme")),
            .valid(event("acme", quantity: "2", id: "b")),
            .valid(event("globex", quantity: "3", id: "c", [("note", long), ("ключ", "значение")])),
            .invalid(InvalidEvent(EventRejection(.missingField, field: "tenant", "tenant is required"))),
            .valid(event("globex", quantity: "4", id: "d", [("endpoint", "/v1/items")])),
        ]
        let prepared = PreparedBatch(IncomingBatch(agent: "agent-1", sequence: 1, receivedAt: at("2026-04-13T13:00:00Z"), events: events))
        for (index, incoming) in events.enumerated() {
            let expected: [UInt8]
            switch incoming {
            case .valid(let usage): expected = PropertiesCodec.encode(usage.properties)
            case .invalid: expected = []
            }
            #expect(Array(prepared.properties(index)) == expected, "event \(index)")
            if case .valid(let usage) = incoming {
                #expect(try PropertiesCodec.decode(Array(prepared.properties(index))) == usage.properties, "event \(index)")
            }
        }
        #expect(prepared.properties(2).isEmpty)
        #expect(prepared.properties(3).count > 64 * events.count, "the buffer outgrew its first size")
    }
}
