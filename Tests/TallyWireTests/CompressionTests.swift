import NIOCore
import TallyTestSupport
import Testing
import TallyWorkload
import TallyCore
@testable import TallyWire

/// Bytes per event on a reference-like workload (BRIEF.md): 1,000 Zipf tenants, mostly
/// `api_calls` of 1, endpoint/region/method/status properties, a random UUID v4 id per event,
/// timestamps rising with jitter at about 100 events/s. Batches of 1,000, as the agent sends.
@Suite(.offThePool) struct CompressionTests {
    static func workload(count: Int, seed: UInt64) -> [UsageEvent] {
        var rng = SplitMix64(seed: seed)
        func zipfTable(_ n: Int) -> [Double] {
            var cumulative: [Double] = []
            var sum = 0.0
            for rank in 1...n {
                sum += 1.0 / Double(rank)
                cumulative.append(sum)
            }
            return cumulative.map { $0 / sum }
        }
        func pick(_ table: [Double]) -> Int {
            let u = Double(rng.next() >> 11) / Double(1 << 53)
            var low = 0
            var high = table.count - 1
            while low < high {
                let middle = (low + high) / 2
                if table[middle] < u { low = middle + 1 } else { high = middle }
            }
            return low
        }
        let tenants = zipfTable(1000)
        let endpoints = zipfTable(20)
        let regions = ["us-east", "us-west", "eu-central", "ap-south"]
        let methods = ["GET", "GET", "GET", "GET", "POST", "POST", "PUT", "DELETE"]
        var now = Fixtures.time.microseconds
        var events: [UsageEvent] = []
        events.reserveCapacity(count)
        for _ in 0..<count {
            now += Int64(rng.next() % 20_001)  // 10 ms on average: about 100 events/s
            let roll = rng.next() % 100
            let (metric, units): (String, Int64) =
                switch roll {
                case 0..<85: ("api_calls", 1)
                case 85..<93: ("bytes_out", Int64(100 + rng.next() % 1_000_000))
                case 93..<99: ("compute_ms", Int64(1 + rng.next() % 2_000))
                default: ("exports", 1)
                }
            var uuid = (0..<16).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            uuid[6] = uuid[6] & 0x0F | 0x40
            uuid[8] = uuid[8] & 0x3F | 0x80
            let statusRoll = rng.next() % 100
            let status = statusRoll < 90 ? "200" : statusRoll < 95 ? "201" : statusRoll < 98 ? "404" : "500"
            events.append(
                UsageEvent(
                    tenant: "tenant-\(pick(tenants))", metric: metric, quantity: Quantity(units),
                    timestamp: EventTime(microseconds: now), id: UUIDText.format(uuid, uppercase: false),
                    properties: Properties([
                        ("endpoint", "/api/v1/resource-\(pick(endpoints))"), ("region", regions[Int(rng.next() % 4)]),
                        ("method", methods[Int(rng.next() % 8)]), ("status", status),
                    ])))
        }
        return events
    }

    @Test func bytesPerEventOnTheReferenceWorkload() throws {
        let events = Self.workload(count: 10_000, seed: 2026)
        let encoder = try BatchPayloadEncoder()
        let decoder = try BatchPayloadDecoder()
        var total = 0
        var ndjson = 0
        for start in stride(from: 0, to: events.count, by: 1000) {
            let batch = Array(events[start..<(start + 1000)])
            let payload = try encoder.encode(batch)
            let frame = try FrameEncoder().encode(.batch(Batch(sequence: UInt64(start / 1000), payload: payload)))
            total += frame.readableBytes
            ndjson += batch.reduce(0) { $0 + $1.jsonLine.utf8.count + 1 }
            #expect(try decoder.decode(payload) == batch)
        }
        let perEvent = Double(total) / Double(events.count)
        print("wire: \(total) bytes for \(events.count) events = \(perEvent) bytes/event (NDJSON: \(Double(ndjson) / Double(events.count)))")
        #expect(perEvent < 30)
        #expect(perEvent > 16)  // a UUID alone is 16 bytes: below that, the test is broken
    }
}
