import Foundation
import TallyCore
import TallyLedger
import Testing

/// Events/s into a durable (WAL, synchronous=FULL) file ledger: 100k events in batches of 1,000,
/// 1,000 tenants, four metrics, a UUID-like id per event, 1% retries, group-by endpoint.
/// A benchmark, not a timed test: it runs only with TALLY_LEDGER_BENCH=1 and prints its figure.
@Test(.enabled(if: ProcessInfo.processInfo.environment["TALLY_LEDGER_BENCH"] == "1"))
func ledgerCommitThroughput() throws {
    let ledger = try TestLedger(SQLiteFactory())
    let total = Int(ProcessInfo.processInfo.environment["TALLY_LEDGER_BENCH_EVENTS"] ?? "") ?? 100_000
    let events = workload(count: total, seed: 1, start: at("2026-04-01T00:00:00Z"), spanHours: 24 * 9, tenants: 1000)
    let clock = ContinuousClock()
    var accepted = 0
    let elapsed = try clock.measure {
        for (sequence, offset) in stride(from: 0, to: events.count, by: 1000).enumerated() {
            let slice = Array(events[offset..<min(offset + 1000, events.count)])
            accepted += try ledger.store.commit(batch(UInt64(sequence), now: "2026-04-10T00:00:00Z", slice)).accepted
        }
    }
    let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    print("ledger commit: \(total) events in batches of 1000, \(accepted) accepted, \(String(format: "%.3f", seconds)) s, \(Int(Double(total) / seconds)) events/s (baseline: naive PostgreSQL 9,400 events/s; target end to end 250,000)")
    #expect(accepted > total * 98 / 100)
}
