import ArgumentParser
import TallyCLI
import Foundation
import TallyCollector
import TallyCore
import TallyLedger
import TallyPricing

/// `tally-bench`: Tally's benchmarks, run on release builds.
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tally-bench", abstract: "Tally benchmarks (build with -c release).",
        subcommands: [QueryBench.self, IngestBench.self, AgentBench.self, ClusterBench.self, SpoolBench.self, PrepareBench.self])
}

/// `tally-bench query`: one tenant's month-to-date usage and charges from the aggregates, beside
/// the same usage from a raw scan, with N events stored.
struct QueryBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "query", abstract: "Usage + charges query latency from aggregates vs a raw scan, with N events stored.")
    @Option(help: "Events to store.") var events = 10_000_000
    @Option(help: "The ledger file (reused if it already holds the events).") var path = "./tally-bench-data/query.db"
    @Option(help: "The pricing file.") var pricing = "deploy/pricing.example.yaml"
    @Option(help: "Aggregate query iterations.") var iterations = 500
    @Option(help: "Raw scan iterations.") var scans = 5

    func run() async throws {
        let config = try PricingConfigLoader.load(file: pricing)
        let aggregate = AggregatePricing(config: config)
        try FileManager.default.createDirectory(
            atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        let ledgerConfiguration = AggregatePricing.ledgerConfiguration(for: config)
        let store = try LedgerStores.open("sqlite:\(path)", configuration: ledgerConfiguration)
        // As the collector runs it: a writer, and a second connection for the API's reads.
        let writer = Ledger(store: store, reader: try LedgerStores.open("sqlite:\(path)", configuration: ledgerConfiguration))
        let period = try requireValueImpl(BillingPeriod("2026-03"), "period")
        let now = try EventTime(parsing: "2026-03-31T23:00:00Z")
        let tenant = "tenant-0001"

        let stored = try await writer.perform { store throws(LedgerError) in
            try store.reconciliation(ReconciliationFilter(period: period)).total.received
        }
        var rows: [(String, String, String, String)] = []
        if stored < Int64(events) {
            let start = ContinuousClock.now
            try await generate(writer: writer, from: Int(stored), to: events, period: period)
            let seconds = (ContinuousClock.now - start).seconds
            rows.append(("store \(events - Int(stored)) events (batches of 1000, via Ledger)", "s", fixed(seconds), "-"))
            rows.append(("commit rate", "events/s", String(Int(Double(events - Int(stored)) / seconds)), "730,000 (raw SQLite, brief)"))
        }
        let service = Invoicing(ledger: writer, pricing: aggregate, lateWindow: .standard, clock: { now })
        let metrics = config.metrics.map(\.name)
        // Warm-up: the first read folds any aggregate log a previous run left, and fills caches.
        _ = try await service.charges(tenant: tenant)
        // 1. What a dashboard does: usage of every metric, then charges — five API calls, each
        //    a hop to the ledger thread and back.
        var aggregateTimes: [Duration] = []
        var total = ""
        for _ in 0..<iterations {
            let start = ContinuousClock.now
            for metric in metrics {
                _ = try await service.usage(UsageQuery(tenant: tenant, metric: metric, from: period.start, to: period.end, granularity: .month))
            }
            total = try await service.charges(tenant: tenant).invoice.total
            aggregateTimes.append(ContinuousClock.now - start)
        }
        // 2. One API call each: `GET /v1/tenants/T/charges` (the month-to-date invoice, every
        //    metric's quantity and price) and `GET /v1/usage` for one metric.
        var chargesTimes: [Duration] = []
        var usageTimes: [Duration] = []
        for index in 0..<iterations {
            let start = ContinuousClock.now
            _ = try await service.charges(tenant: tenant)
            chargesTimes.append(ContinuousClock.now - start)
            let usageStart = ContinuousClock.now
            _ = try await service.usage(
                UsageQuery(tenant: tenant, metric: metrics[index % metrics.count], from: period.start, to: period.end, granularity: .month))
            usageTimes.append(ContinuousClock.now - usageStart)
        }
        // 3. The store's own work for usage (4 metrics) + charges, timed on the ledger thread:
        //    the query cost without the hop between threads.
        let storeTimes = try await writer.perform { store throws(LedgerError) -> [Duration] in
            var times: [Duration] = []
            let invoices = store
            for _ in 0..<iterations {
                let start = ContinuousClock.now
                for metric in metrics {
                    _ = try store.usage(UsageQuery(tenant: tenant, metric: metric, from: period.start, to: period.end, granularity: .month))
                }
                _ = try? aggregate.invoice(store: invoices, tenant: tenant, period: period)
                times.append(ContinuousClock.now - start)
            }
            return times
        }
        var rawTimes: [Duration] = []
        var rawSum = Quantity.zero
        for _ in 0..<scans {
            let start = ContinuousClock.now
            rawSum = try await writer.perform { store throws(LedgerError) in
                var sum = Quantity.zero
                try store.scanRawEvents(tenant: tenant, period: period) { (record: LedgerRecord) throws(LedgerError) in
                    if record.event.metric == "api_calls" { sum = (try? sum.adding(record.event.quantity)) ?? sum }
                }
                return sum
            }
            rawTimes.append(ContinuousClock.now - start)
        }
        let count = try await writer.perform { store throws(LedgerError) in
            try store.reconciliation(ReconciliationFilter(period: period)).total.received
        }
        await writer.shutdown()
        rows.append(("events stored", "events", String(count), "10,000,000"))
        rows.append(("charges (1 call: month-to-date invoice), p50", "ms", ms(percentile(chargesTimes, 50)), "5-20 ms (seed aggregate)"))
        rows.append(("charges (1 call: month-to-date invoice), p99", "ms", ms(percentile(chargesTimes, 99)), "target < 1 ms"))
        rows.append(("usage of one metric (1 call), p50", "ms", ms(percentile(usageTimes, 50)), "-"))
        rows.append(("usage of one metric (1 call), p99", "ms", ms(percentile(usageTimes, 99)), "target < 1 ms"))
        rows.append(("usage (4 metrics) + charges, 5 calls, p50", "ms", ms(percentile(aggregateTimes, 50)), "5-20 ms (seed aggregate)"))
        rows.append(("usage (4 metrics) + charges, 5 calls, p99", "ms", ms(percentile(aggregateTimes, 99)), "-"))
        rows.append(("  same, store work on the ledger thread, p50", "ms", ms(percentile(storeTimes, 50)), "-"))
        rows.append(("  same, store work on the ledger thread, p99", "ms", ms(percentile(storeTimes, 99)), "target < 1 ms"))
        rows.append(("raw scan of the tenant's month, p50", "ms", ms(percentile(rawTimes, 50)), "8-15 s (seed)"))
        rows.append(("raw scan of the tenant's month, p99", "ms", ms(percentile(rawTimes, 99)), "8-15 s (seed)"))
        rows.append(("\(tenant) charges total (USD)", "USD", total, "-"))
        rows.append(("\(tenant) api_calls (raw scan)", "calls", rawSum.description, "-"))
        var table = BenchTable.figures(echo: false)
        for row in rows { table.add(row.0, row.1, row.2, row.3) }
        table.print()
    }

    /// Commits events `from ..< to` of a deterministic March workload: 1,000 tenants (tenant-0001
    /// gets 1% of the traffic, the rest shared), 20 endpoints, 4 regions, 4 metrics.
    func generate(writer: Ledger, from: Int, to: Int, period: BillingPeriod) async throws {
        let span = period.end.microseconds - period.start.microseconds - 3_600_000_000
        let endpoints = (0..<20).map { "/api/v1/e\($0)" }
        let regions = ["eu", "us", "ap", "sa"]
        let metrics = ["api_calls", "api_calls", "api_calls", "bytes_out", "compute_ms", "exports"]
        var index = from
        var sequence = UInt64(from / 1000)
        while index < to {
            let end = min(to, index + 1000)
            var batch: [IncomingEvent] = []
            batch.reserveCapacity(end - index)
            var last = period.start
            for n in index..<end {
                let time = EventTime(microseconds: period.start.microseconds + Int64(n) * (span / Int64(to)))
                last = time
                let tenant = n % 100 == 0 ? 1 : 2 + (n * 7919) % 999
                let metric = metrics[n % metrics.count]
                let quantity: Int64 = metric == "bytes_out" ? Int64(1000 + n % 5000) : metric == "compute_ms" ? Int64(n % 300) : 1
                var properties = [("endpoint", endpoints[(n / 3) % 20]), ("region", regions[(n / 7) % 4])]
                if metric == "exports" { properties.append(("status", n % 50 == 0 ? "500" : "200")) }
                batch.append(
                    .valid(
                        UsageEvent(
                            tenant: "tenant-" + String(repeating: "0", count: 4 - String(tenant).count) + String(tenant), metric: metric,
                            quantity: Quantity(quantity), timestamp: time, id: "r\(n)", properties: Properties(properties))))
            }
            sequence += 1
            let incoming = IncomingBatch(agent: "bench", sequence: sequence, receivedAt: last.advanced(by: .seconds(1)), events: batch)
            _ = try await writer.commit(incoming)
            index = end
            if index % 500_000 == 0 { FileHandle.standardError.write(Data("stored \(index)\n".utf8)) }
        }
    }
}

func percentile(_ values: [Duration], _ p: Int) -> Duration {
    let sorted = values.sorted()
    guard !sorted.isEmpty else { return .zero }
    return sorted[min(sorted.count - 1, (sorted.count * p + 99) / 100 - 1)]
}

// Timing figures only: durations are reported, never billed, so floating point is fine here.
func ms(_ duration: Duration) -> String { fixed(duration.seconds * 1000) }
func fixed(_ value: Double) -> String { String(format: "%.3f", value) }
func pad(_ text: String, _ width: Int) -> String { text.count >= width ? text + " " : text + String(repeating: " ", count: width - text.count) }

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

/// Unwraps or fails with a message (no force-unwraps).
func requireValueImpl<T>(_ value: T?, _ what: String) throws -> T {
    guard let value else { throw ValidationError("missing \(what)") }
    return value
}

await CommandRunner.main(Bench.self)
