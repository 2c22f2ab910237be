import TallyCore
import TallyTestSupport
import Testing

@testable import TallyWorkload

/// Far enough in the future that no generated timestamp is "in the future" for the decoder.
let farFuture = EventTime(microseconds: .max / 2)

func generate(_ configuration: WorkloadConfiguration) throws -> [UInt8] {
    var workload = try ReferenceWorkload(configuration)
    var bytes: [UInt8] = []
    while workload.appendNextLine(to: &bytes) != nil {}
    return bytes
}

func decode(_ line: [UInt8], decoder: EventDecoder = EventDecoder()) -> Result<UsageEvent, EventRejection> {
    line.withUnsafeBufferPointer { decoder.decodeLine($0, now: farFuture) }
}

@Suite("The reference workload", .offThePool)
struct ReferenceWorkloadTests {
    @Test("the same seed gives the same bytes; another seed other bytes")
    func determinism() throws {
        let one = try generate(WorkloadConfiguration(seed: 1, events: 20_000))
        let again = try generate(WorkloadConfiguration(seed: 1, events: 20_000))
        let other = try generate(WorkloadConfiguration(seed: 2, events: 20_000))
        #expect(one.count > 20_000 * 150)
        #expect(one == again)
        #expect(one != other)
        #expect(one.filter { $0 == UInt8(ascii: "\n") }.count == 20_000)
        // A shorter run is a prefix of a longer one.
        let shorter = try generate(WorkloadConfiguration(seed: 1, events: 5_000))
        #expect(Array(one.prefix(shorter.count)) == shorter)
    }

    @Test("the sequence API and the byte API give the same lines")
    func sequenceMatchesBytes() throws {
        let configuration = WorkloadConfiguration(seed: 9, events: 5_000)
        let bytes = try generate(configuration)
        var joined: [UInt8] = []
        for line in try ReferenceWorkload(configuration) {
            joined += line.bytes
            joined.append(UInt8(ascii: "\n"))
        }
        #expect(joined == bytes)
    }

    @Test("the first line of seed 1 never changes (the workload is a format)")
    func golden() throws {
        var workload = try ReferenceWorkload(WorkloadConfiguration(seed: 1, events: 1))
        let first = workload.next()
        let line = try #require(first)
        #expect(line.text == goldenFirstLine)
        #expect(workload.next() == nil)
    }

    @Test("100,000 lines of seed 1 never change: their CRC32C is pinned")
    func goldenChecksum() throws {
        let bytes = try generate(WorkloadConfiguration(seed: 1, events: 100_000))
        #expect(bytes.count == 23_667_885)
        #expect(CRC32C.checksum(bytes) == 0x84AA_81DF)
    }

    @Test("every valid line is its event's jsonLine, and decodes back to that event")
    func validLinesAreCanonical() throws {
        var kinds: [String: Int] = [:]
        var sawFraction = false
        var sawBigBytes = false
        for line in try ReferenceWorkload(WorkloadConfiguration(seed: 3, events: 30_000)) {
            guard let event = line.event else { continue }
            kinds[event.metric, default: 0] += 1
            #expect(line.text == event.jsonLine)
            #expect(try decode(line.bytes).get() == event)
            #expect(event.properties.map(\.key) == ["endpoint", "method", "region", "status"])
            let id = try #require(event.id)
            #expect(id.count == 36 && Array(id.utf8)[14] == UInt8(ascii: "4"))
            switch event.metric {
            case "api_calls", "exports": #expect(event.quantity == Quantity(1))
            case "bytes_out":
                #expect(event.quantity.isWhole && event.quantity >= Quantity(1))
                if event.quantity > Quantity(100_000_000) { sawBigBytes = true }
            case "compute_ms":
                #expect(event.quantity.nanos % 1_000_000 == 0 && event.quantity > .zero)
                if !event.quantity.isWhole { sawFraction = true }
            default: Issue.record("unexpected metric \(event.metric)")
            }
        }
        #expect(sawFraction && sawBigBytes)
        #expect(kinds["api_calls", default: 0] > kinds["bytes_out", default: 0])
        #expect(kinds["exports", default: 0] > 0 && kinds["exports", default: 0] < 200)
    }

    @Test("bad configurations are refused with a reason")
    func validation() {
        #expect(throws: WorkloadConfigurationError.eventCount(-1)) {
            try ReferenceWorkload(WorkloadConfiguration(seed: 1, events: -1))
        }
        #expect(throws: WorkloadConfigurationError.rate(0)) {
            try ReferenceWorkload(WorkloadConfiguration(seed: 1, events: 1, rate: 0))
        }
        #expect(WorkloadConfigurationError.rate(0).description.contains("rate"))
        #expect(WorkloadConfiguration.defaultStart.description == "2026-04-01T00:00:00Z")
    }
}

let goldenFirstLine =
    #"{"tenant":"t0041","metric":"api_calls","quantity":1,"timestamp":"2026-04-01T00:00:00Z","id":"ddfdb48a-b9ed-4a21-8d3c-db8c3aa5b1d0","properties":{"endpoint":"/api/v1/payments","method":"GET","region":"us-east-1","status":"200"}}"#
