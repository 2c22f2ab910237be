import Foundation
import TallyCore
import TallyLedger
import Testing

/// Events/s into a durable (WAL, synchronous=FULL) file ledger: 100k events in batches of 1,000,
/// 1,000 tenants, four metrics, a random id per event, 1% retries, group-by endpoint.
/// A benchmark, not a timed test: it runs only with TALLY_LEDGER_BENCH=1 and prints its figure.
/// TALLY_LEDGER_BENCH_SPAN_HOURS (default 216: sparse, nearly every event makes a new hourly
/// cell), TALLY_LEDGER_BENCH_SKEWED=1 (Zipf-like tenants, as the reference workload) and
/// TALLY_LEDGER_BENCH_GROUP_BY=0 (no group-by dimension) vary it.
@Test(.enabled(if: ProcessInfo.processInfo.environment["TALLY_LEDGER_BENCH"] == "1"))
func ledgerCommitThroughput() throws {
    let environment = ProcessInfo.processInfo.environment
    var configuration = TestLedger.configuration
    if environment["TALLY_LEDGER_BENCH_GROUP_BY"] == "0" { configuration.groupBy = [] }
    let ledger = try TestLedger(SQLiteFactory(), configuration: configuration)
    let total = Int(ProcessInfo.processInfo.environment["TALLY_LEDGER_BENCH_EVENTS"] ?? "") ?? 100_000
    let span = Int64(environment["TALLY_LEDGER_BENCH_SPAN_HOURS"] ?? "") ?? 24 * 9
    let skewed = environment["TALLY_LEDGER_BENCH_SKEWED"] == "1"
    let events = workload(count: total, seed: 1, start: at("2026-04-01T00:00:00Z"), spanHours: span, tenants: 1000, skewed: skewed)
    let clock = ContinuousClock()
    var accepted = 0
    let elapsed = try clock.measure {
        for (sequence, offset) in stride(from: 0, to: events.count, by: 1000).enumerated() {
            let slice = Array(events[offset..<min(offset + 1000, events.count)])
            accepted += try ledger.store.commit(batch(UInt64(sequence), now: "2026-04-10T00:00:00Z", slice)).accepted
        }
    }
    let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    print("ledger commit: \(total) events in batches of 1000 over \(span) h, \(skewed ? "skewed" : "uniform") tenants, group-by \(configuration.groupBy), \(accepted) accepted, \(String(format: "%.3f", seconds)) s, \(Int(Double(total) / seconds)) events/s (baseline: naive PostgreSQL 9,400 events/s; target end to end 250,000)")
    #expect(accepted > total * 98 / 100)

    // Month-to-date usage of the busiest tenant, by day, plus its period totals: from aggregates.
    var latencies: [Duration] = []
    let april = BillingPeriod(containing: at("2026-04-01T00:00:00Z"))
    for _ in 0..<500 {
        latencies.append(
            try clock.measure {
                _ = try ledger.store.usage(
                    UsageQuery(tenant: "tenant-0", metric: "api_calls", from: april.start, to: april.end, granularity: .day))
                _ = try ledger.store.periodTotals(tenant: "tenant-0", metric: "api_calls", period: april)
            })
    }
    latencies.sort()
    print("usage + period totals query: p50 \(latencies[250]), p99 \(latencies[495]) (target p99 < 1 ms)")
}
