import Foundation
import TallyCore
import TallyTestSupport
import Testing

@testable import TallyWorkload

/// A row key for the independent count.
private struct Key: Hashable {
    var tenant: String
    var metric: String
    var period: BillingPeriod
}

private struct Tally {
    var quantity = Quantity.zero
    var count = 0
    var lateQuantity = Quantity.zero
    var lateCount = 0
}

@Suite("Expected totals", .offThePool)
struct ExpectedTotalsTests {
    @Test(
        "an independent count (decode, dedupe by fingerprint, sum) equals the expected totals exactly",
        arguments: ["2026-04-30T23:55:00Z", "2026-04-01T00:00:00Z"])
    func independentCount(start: String) throws {
        let configuration = WorkloadConfiguration(seed: 11, events: 100_000, start: try EventTime(parsing: start))
        var workload = try ReferenceWorkload(configuration)
        var bytes: [UInt8] = []
        while workload.appendNextLine(to: &bytes) != nil {}
        let expected = workload.expectedTotals

        let decoder = EventDecoder()
        var seen = Set<Fingerprint>()
        var tallies: [Key: Tally] = [:]
        var lines = 0
        var rejected = 0
        var duplicates = 0
        var late = 0
        var newest: Int64 = 0
        var scratch: [UInt8] = []
        try bytes.withUnsafeBufferPointer { buffer in
            var failure: (any Error)?
            forEachLine(buffer) { line in
                lines += 1
                guard case .success(let event) = decoder.decodeLine(line, now: farFuture) else {
                    rejected += 1
                    return
                }
                guard seen.insert(Fingerprint(of: event, scratch: &scratch)).inserted else {
                    duplicates += 1
                    return
                }
                // On-time events never go backwards; a late one is at least an hour behind.
                let isLate = newest != 0 && event.timestamp.microseconds < newest - 1_800_000_000
                newest = max(newest, event.timestamp.microseconds)
                if isLate { late += 1 }
                let key = Key(tenant: event.tenant, metric: event.metric, period: BillingPeriod(containing: event.timestamp))
                var tally = tallies[key, default: Tally()]
                do {
                    tally.quantity = try tally.quantity.adding(event.quantity)
                    if isLate { tally.lateQuantity = try tally.lateQuantity.adding(event.quantity) }
                } catch {
                    failure = error
                }
                tally.count += 1
                if isLate { tally.lateCount += 1 }
                tallies[key] = tally
            }
            if let failure { throw failure }
        }

        #expect(lines == 100_000)
        #expect(expected.summary.lines == lines)
        #expect(expected.summary.invalid == rejected)
        #expect(expected.summary.retries == duplicates)
        #expect(expected.summary.uniqueEvents == seen.count)
        #expect(expected.summary.late == late)
        #expect(expected.summary.lines == expected.summary.uniqueEvents + expected.summary.retries + expected.summary.invalid)
        #expect(expected.totals.count == tallies.count)
        for row in expected.totals {
            let tally = tallies[Key(tenant: row.tenant, metric: row.metric, period: row.period)]
            #expect(tally?.quantity == row.quantity, "\(row.tenant) \(row.metric) \(row.period)")
            #expect(tally?.count == row.count)
            #expect(tally?.lateQuantity == row.lateQuantity)
            #expect(tally?.lateCount == row.lateCount)
        }
        // Each late event is listed, 1 to 48 hours behind the clock that sent it, and adds up
        // to the rows' late figures.
        #expect(expected.lateEvents.count == expected.summary.late)
        #expect(
            expected.lateEvents.allSatisfy {
                let behind = $0.sentAt.microseconds - $0.timestamp.microseconds
                return behind >= 3_600_000_000 && behind <= 48 * 3_600_000_000
            })
        for row in expected.totals where row.lateCount > 0 {
            let listed = expected.lateEvents.filter { $0.tenant == row.tenant && $0.metric == row.metric && $0.period == row.period }
            #expect(listed.count == row.lateCount)
            #expect(try listed.reduce(Quantity.zero) { try $0.adding($1.quantity) } == row.lateQuantity)
        }
        // Sorted by tenant, metric, period.
        let keys = expected.totals.map { ($0.tenant, $0.metric, $0.period.description) }
        #expect(zip(keys, keys.dropFirst()).allSatisfy { $0 < $1 })
        // The month-end run spans April and May, and some late events land in April.
        let periods = Set(expected.totals.map(\.period.description))
        #expect(periods.count >= 2)
        if start.hasPrefix("2026-04-30") {
            #expect(periods == ["2026-04", "2026-05"])
            #expect(expected.totals.contains { $0.period.description == "2026-04" && $0.lateCount > 0 })
        } else {
            #expect(periods == ["2026-03", "2026-04"])  // late events before the start
        }
    }

    @Test("the file round-trips, with quantities as strings")
    func roundTrip() throws {
        var workload = try ReferenceWorkload(WorkloadConfiguration(seed: 5, events: 3_000, rate: 250, latePerMillion: 10_000))
        while workload.next() != nil {}
        let totals = workload.expectedTotals
        let bytes = try totals.jsonBytes()
        let text = String(decoding: bytes, as: UTF8.self)
        #expect(text.hasPrefix("{\"format\":\"tally-expected-totals/1\","))
        #expect(text.contains("\"quantity\":\""))
        #expect(try totals.jsonBytes() == bytes)
        #expect(try ExpectedTotals(jsonBytes: bytes) == totals)
        #expect(!totals.lateEvents.isEmpty)
        // A file without the optional lateEvents key still reads.
        let withoutLate = text.replacingOccurrences(of: "\"lateEvents\"", with: "\"ignoredKey\"")
        #expect(try ExpectedTotals(jsonBytes: Array(withoutLate.utf8)).lateEvents.isEmpty)

        let path = FileManager.default.temporaryDirectory.appendingPathComponent("expected-\(UInt64.random(in: 0...UInt64.max)).json").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try totals.write(to: path)
        #expect(try ExpectedTotals.read(from: path) == totals)
        #expect(try totals.quantity(metric: "api_calls") > .zero)
    }

    @Test("unreadable, malformed and unknown files are refused with a reason")
    func badFiles() throws {
        #expect(throws: ExpectedTotalsError.self) { try ExpectedTotals.read(from: "/nonexistent/expected.json") }
        #expect(throws: ExpectedTotalsError.self) { try ExpectedTotals(jsonBytes: Array("{".utf8)) }
        var workload = try ReferenceWorkload(WorkloadConfiguration(seed: 5, events: 10))
        while workload.next() != nil {}
        let text = String(decoding: try workload.expectedTotals.jsonBytes(), as: UTF8.self)
        let future = text.replacingOccurrences(of: "tally-expected-totals/1", with: "tally-expected-totals/9")
        #expect(throws: ExpectedTotalsError.unsupportedFormat("tally-expected-totals/9")) {
            try ExpectedTotals(jsonBytes: Array(future.utf8))
        }
        let badQuantity = text.replacingOccurrences(of: "\"quantity\":\"1\"", with: "\"quantity\":\"one\"")
        #expect(badQuantity != text)
        #expect(throws: ExpectedTotalsError.self) { try ExpectedTotals(jsonBytes: Array(badQuantity.utf8)) }
    }
}
