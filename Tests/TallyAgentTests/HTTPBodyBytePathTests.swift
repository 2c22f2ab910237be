import Foundation
import NIOCore
import TallyAgent
import TallyCore
import TallySpool
import TallyWorkload
import Testing

/// HTTP bodies through `EventIngest.ingest(body:)`, which takes NDJSON whose first line has the
/// common shape straight from the bytes, against the decoder's reading of the same body: the
/// same outcome per event, and the same events in the spool, in order.
@Suite struct HTTPBodyBytePathTests {
    static let line = #"{"tenant":"acme","metric":"api_calls","quantity":2,"timestamp":"2026-04-13T11:00:00Z","id":"r-1"}"#

    static let bodies: [String] = [
        line, line + "\n", line + "\r\n", line + "\n" + line.replacingOccurrences(of: "r-1", with: "r-2") + "\n",
        line + "\n{not json\n\n" + line.replacingOccurrences(of: "acme", with: "globex"), line + "\n]", line + " " + line,
        "\n\n  " + line + "\n", line + "\n" + #"{"tenant":"","metric":"m","quantity":1,"timestamp":"2026-04-13T11:00:00Z"}"#,
        // The decoder's way from the first line: a rare shape, an array, one object over lines.
        #"{"tenant":"t","metric":"m","quantity":1,"timestamp":"2026-04-13T11:00:00Z","properties":{"n":1}}"# + "\n" + line,
        "[" + line + "]", "{\n\"tenant\": \"t\", \"metric\": \"m\",\n\"quantity\": 1, \"timestamp\": \"2026-04-13T11:00:00Z\"\n}\n",
    ]

    func expected(_ body: [UInt8], _ decoder: EventDecoder, now: EventTime) -> (outcomes: [EventIngest.Outcome], events: [UsageEvent]) {
        let results = body.withUnsafeBufferPointer { decoder.decodeBody($0, now: now) }
        var events: [UsageEvent] = []
        let outcomes = results.map { result -> EventIngest.Outcome in
            switch result {
            case .success(let event):
                events.append(event)
                return .accepted(Fingerprint(of: event))
            case .failure(let rejection): return .rejected(rejection)
            }
        }
        return (outcomes, events)
    }

    @Test func bodiesGiveTheDecodersOutcomesAndSpoolTheSameEvents() async throws {
        var workload = try ReferenceWorkload(WorkloadConfiguration(seed: 5, events: 5_000))
        var generated: [UInt8] = []
        while workload.appendNextLine(to: &generated) != nil {}
        // Bodies of 100 lines, as clients send them, and the edge cases above.
        var bodies = Self.bodies.map { Array($0.utf8) }
        var start = 0
        var lines = 0
        for index in generated.indices where generated[index] == 0x0A {
            lines += 1
            if lines % 100 == 0 {
                bodies.append(Array(generated[start...index]))
                start = index + 1
            }
        }
        let spool = try await Spool.open(directory: temporaryDirectory())
        let decoder = EventDecoder()
        let ingest = EventIngest(spool: spool, decoder: decoder, metrics: AgentMetrics())
        var spooled: [UsageEvent] = []
        for body in bodies {
            // A fixed clock is not possible through `ingest(body:)` (it reads the time); the
            // workload's and the cases' timestamps are all well in the past.
            let now = EventTime.now()
            let expected = expected(body, decoder, now: now)
            var buffer = ByteBuffer()
            buffer.writeBytes(body)
            let outcomes = try await ingest.ingest(body: buffer)
            #expect(outcomes == expected.outcomes, "\(String(decoding: body.prefix(200), as: UTF8.self))")
            spooled += expected.events
        }
        var read: [UsageEvent] = []
        var position = SpoolPosition(segment: 0, offset: 0)
        while true {
            let batch = try await spool.read(from: position, maxEvents: 10_000)
            if batch.events.isEmpty { break }
            read += batch.events
            position = batch.end
        }
        #expect(read.count == spooled.count && read == spooled)
        #expect(spooled.count > 4_000)
    }
}
