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

    /// The content digest is what ledgers already store for every batch (a resend must match
    /// it): the fingerprint (first 16 bytes of SHA-256) of every event's piece in order — 1 and
    /// the canonical encoding for a valid event; 2, the reason, tenant, metric and id as
    /// length-prefixed text and the timestamp (or Int64.min) for an invalid one. Computed here
    /// the plain way, over the whole concatenation, for batches from 0 to 3,000 events, so a
    /// change in how the digest is fed cannot change a byte of it.
    @Test func theContentDigestIsTheFingerprintOfEveryEventsPieceInOrder() {
        var random = SystemRandomNumberGenerator()
        for size in [0, 1, 2, 63, 64, 65, 1_000, 3_000] {
            var events: [IncomingEvent] = []
            for index in 0..<size {
                switch Int.random(in: 0..<10, using: &random) {
                case 0:
                    events.append(.invalid(InvalidEvent(EventRejection(.malformed, field: nil, "not JSON"), tenant: "acme")))
                case 1:
                    events.append(
                        .invalid(
                            InvalidEvent(
                                EventRejection(.missingField, field: "metric", "metric is required"), tenant: "tenant-\(index)",
                                metric: nil, timestamp: at("2026-04-13T12:00:00Z"), id: "id-\(index)")))
                default:
                    events.append(
                        .valid(event("tenant-\(index % 7)", quantity: "\(index).5", id: index % 3 == 0 ? nil : "e-\(index)", [("k", "v\(index)")])))
                }
            }
            var whole: [UInt8] = []
            for incoming in events {
                switch incoming {
                case .valid(let usage):
                    whole.append(1)
                    CanonicalEncoding.append(usage, to: &whole)
                case .invalid(let invalid):
                    whole.append(2)
                    for text in [invalid.rejection.reason.rawValue, invalid.tenant ?? "", invalid.metric ?? "", invalid.id ?? ""] {
                        whole.appendString32(text)
                    }
                    whole.appendBigEndian(UInt64(bitPattern: invalid.timestamp?.microseconds ?? .min), bytes: 8)
                }
            }
            let prepared = PreparedBatch(IncomingBatch(agent: "agent-1", sequence: 1, receivedAt: at("2026-04-13T13:00:00Z"), events: events))
            #expect(prepared.contentDigest == Fingerprint(canonicalBytes: whole).bytes, "\(size) events")
            #expect(prepared.contentDigest.count == 16)
        }
    }
}
