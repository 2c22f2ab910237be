import TallyCore
import TallyTestSupport
import Testing

@testable import TallyWorkload

@Suite("The workload's shape", .offThePool)
struct WorkloadShapeTests {
    @Test("every invalid line, of every kind, is rejected by EventDecoder")
    func invalidLinesAreRejected() throws {
        let configuration = WorkloadConfiguration(seed: 21, events: 20_000, invalidPerMillion: 200_000)
        var byKind: [InvalidLineKind: Int] = [:]
        for line in try ReferenceWorkload(configuration) {
            guard case .invalid(let kind) = line.kind else { continue }
            byKind[kind, default: 0] += 1
            #expect(!line.bytes.contains(UInt8(ascii: "\n")))
            #expect(line.bytes.contains { $0 != UInt8(ascii: " ") })
            if case .success(let event) = decode(line.bytes) {
                Issue.record("\(kind) line was accepted: \(line.text) -> \(event)")
            }
        }
        #expect(Set(byKind.keys) == Set(InvalidLineKind.allCases))
        #expect(byKind.values.allSatisfy { $0 > 300 })
    }

    @Test("retries, late and invalid lines come at their rates on 100k lines; time moves forward")
    func rates() throws {
        var workload = try ReferenceWorkload(WorkloadConfiguration(seed: 1, events: 100_000))
        var counts: [String: Int] = [:]
        var clock = Int64.min
        var recent: [[UInt8]] = []
        var behind: [Int64] = []
        while let line = workload.next() {
            switch line.kind {
            case .event:
                counts["event", default: 0] += 1
                let time = try #require(line.event).timestamp.microseconds
                #expect(time >= clock)
                clock = time
                recent.append(line.bytes)
            case .late:
                counts["late", default: 0] += 1
                behind.append(clock - (try #require(line.event)).timestamp.microseconds)
                recent.append(line.bytes)
            case .retry:
                counts["retry", default: 0] += 1
                #expect(recent.suffix(ReferenceWorkload.retryWindow).contains(line.bytes))
            case .invalid: counts["invalid", default: 0] += 1
            }
        }
        #expect((800...1_200).contains(counts["retry", default: 0]))
        #expect((60...140).contains(counts["late", default: 0]))
        #expect((3...25).contains(counts["invalid", default: 0]))
        // 1 to 48 hours behind the clock (the clock moves at most 20 ms between lines).
        #expect(behind.allSatisfy { $0 >= 3_600_000_000 - 20_000 && $0 <= 48 * 3_600_000_000 })
        // 100 events per simulated second on average: 100,000 lines take about 1,000 s.
        let elapsed = clock - WorkloadConfiguration.defaultStart.microseconds
        #expect((950_000_000...1_050_000_000).contains(elapsed))
        let summary = workload.expectedTotals.summary
        #expect(summary.retries == counts["retry"] && summary.late == counts["late"] && summary.invalid == counts["invalid"])
    }

    @Test("tenants get Zipf-like traffic: t0001 about 13.4%, t0002 half of that")
    func zipf() throws {
        var workload = try ReferenceWorkload(WorkloadConfiguration(seed: 8, events: 100_000))
        while workload.next() != nil {}
        let totals = workload.expectedTotals
        var perTenant: [String: Int] = [:]
        for row in totals.totals { perTenant[row.tenant, default: 0] += row.count }
        let all = perTenant.values.reduce(0, +)
        let first = perTenant["t0001", default: 0]
        let second = perTenant["t0002", default: 0]
        let tenth = perTenant["t0010", default: 0]
        // 1 / H(1000) = 13.36%.
        #expect(first * 1_000 >= all * 125 && first * 1_000 <= all * 142)
        #expect(second * 100 >= first * 44 && second * 100 <= first * 56)
        #expect(tenth * 100 >= first * 7 && tenth * 100 <= first * 13)
        #expect(perTenant.values.max() == first)
        #expect(perTenant.count > 900)  // the long tail is there
    }
}
