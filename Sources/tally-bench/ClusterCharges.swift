import Foundation
import TallyCollector
import TallyCore
import TallyLedger
import TallyWorkload

/// The month-to-date charges call on PostgreSQL, at the event count the drain left and again
/// after loading up to `--query-events`: in-process through `Invoicing` (the collector's
/// code path, a `Ledger` with its reader as the collector has) and over HTTP from a running
/// collector (`GET /v1/tenants/T/charges`, one keep-alive connection).
struct ChargesBench {
    let run: ClusterBenchRun
    let ledger: Ledger
    let httpPort: Int?
    /// The ledger's database (for `--statements`).
    let url: String

    var options: ClusterBench { run.options }

    func measure(into table: inout BenchTable) async throws {
        var stored = try await storedEvents()
        let first = try await latency(stored: stored, into: &table)
        guard options.queryEvents > stored else { return }
        let loaded = options.queryEvents - stored
        clusterProgress("charges: loading \(loaded) more events in-process (\(options.poolSize) writers, batches of 1,000)")
        let elapsed = try await load(loaded)
        table.add(
            "ledger load in-process, \(options.poolSize) writers, batches of 1,000", rate(loaded, elapsed) + " events/s", "-",
            "(fills the ledger for the next rows)")
        stored = try await storedEvents()
        let waited = try await autovacuumDone()
        table.add(
            "wait for the server's autovacuum of the loaded rows", fixed(waited.seconds) + " s", "-",
            "the next rows measure the steady state, not the bulk load's aftermath")
        let second = try await latency(stored: stored, into: &table)
        table.add(
            "charges p99 at \(grouped(stored)) / at \(grouped(first.events)) events", times(second.p99.seconds / first.p99.seconds), "-",
            "flat ≈ 1.0×")
    }

    /// Waits (at most 5 minutes) until no autovacuum worker runs on the server, twice in a row
    /// a second apart: loading millions of rows in two minutes sets autovacuum off on every
    /// table, which a ledger filling at its real pace spreads over its day. Returns the wait.
    func autovacuumDone() async throws -> Duration {
        let start = ContinuousClock.now
        var quiet = 0
        while quiet < 2 && ContinuousClock.now - start < .seconds(300) {
            let workers = try run.server.psql(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'", database: "postgres")
            quiet = workers == "0" ? quiet + 1 : 0
            if quiet < 2 { try await Task.sleep(for: .seconds(1)) }
        }
        clusterProgress("charges: autovacuum done after \(fixed((ContinuousClock.now - start).seconds)) s")
        return ContinuousClock.now - start
    }

    func storedEvents() async throws -> Int {
        Int(try await ledger.perform { store throws(LedgerError) in try store.reconciliation(ReconciliationFilter()).total.received })
    }

    /// p50 and p99 of the charges call, in-process and over HTTP, after 20 warm-up calls.
    func latency(stored: Int, into table: inout BenchTable) async throws -> (events: Int, p99: Duration) {
        let tenant = options.tenant
        clusterProgress("charges: \(options.iterations) calls for \(tenant) with \(stored) events stored")
        let service = Invoicing(ledger: ledger, pricing: run.pricing, lateWindow: run.lateWindow)
        var total = ""
        for _ in 0..<20 { total = try await service.charges(tenant: tenant).invoice.total }
        if options.statements > 0 {
            _ = try run.server.psql("SELECT pg_stat_statements_reset()", database: try run.database(of: url))
        }
        var times: [Duration] = []
        for _ in 0..<options.iterations {
            let start = ContinuousClock.now
            _ = try await service.charges(tenant: tenant)
            times.append(ContinuousClock.now - start)
        }
        if options.statements > 0 { try run.printStatements(url: url, per: options.iterations, unit: "charges call") }
        let events = grouped(stored)
        table.add("charges \(tenant) month-to-date, in-process, p50 (\(events) ev)", ms(percentile(times, 50)) + " ms", "-", "total \(total)")
        table.add("charges \(tenant) month-to-date, in-process, p99 (\(events) ev)", ms(percentile(times, 99)) + " ms", "-", "target < 2 ms")
        if let httpPort {
            let http = try httpLatency(port: httpPort, path: "/v1/tenants/\(tenant)/charges")
            table.add("GET /v1/tenants/\(tenant)/charges over HTTP, p50 (\(events) ev)", ms(percentile(http, 50)) + " ms")
            table.add("GET /v1/tenants/\(tenant)/charges over HTTP, p99 (\(events) ev)", ms(percentile(http, 99)) + " ms", "-", "target < 2 ms")
        }
        return (stored, percentile(times, 99))
    }

    func httpLatency(port: Int, path: String) throws -> [Duration] {
        var client = try BenchHTTPConnection(port: port)
        defer { client.close() }
        let request = BenchHTTPConnection.request("GET", path)
        var times: [Duration] = []
        for index in 0..<(options.iterations + 20) {
            let start = ContinuousClock.now
            let answer = try client.exchange(request)
            guard answer.status == 200 else {
                throw BenchFailure("GET \(path): \(answer.status) \(String(decoding: answer.body, as: UTF8.self))")
            }
            if index >= 20 { times.append(ContinuousClock.now - start) }
        }
        return times
    }

    /// Commits `count` reference-workload lines' events (other seeds than the agents'), spread
    /// over the month so far, from `poolSize` tasks at once, in batches of 1,000.
    func load(_ count: Int) async throws -> Duration {
        let writers = options.poolSize
        let now = EventTime.now()
        let monthSoFar = (now.microseconds - BillingPeriod(containing: now).start.microseconds) / 1_000_000
        // Ends ten minutes ago; spans the month so far (at least an hour).
        let span = max(3_600, monthSoFar - 1_200)
        let begin = now.advanced(by: .seconds(-span - 600))
        let perWriter = (count + writers - 1) / writers
        // Rounded up, so that the lines end within the span.
        let rate = min(WorkloadConfiguration.maxRate, max(1, (perWriter + Int(span) - 1) / Int(span)))
        let ledger = self.ledger
        let start = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for writer in 0..<writers {
                group.addTask {
                    var workload = try ReferenceWorkload(
                        WorkloadConfiguration(seed: 9_000 + UInt64(writer), events: perWriter, start: begin, rate: rate))
                    var sequence: UInt64 = 0
                    var batch: [IncomingEvent] = []
                    batch.reserveCapacity(1_000)
                    func commit() async throws {
                        sequence += 1
                        _ = try await ledger.commit(
                            IncomingBatch(agent: "bench-load-\(writer)", sequence: sequence, receivedAt: EventTime.now(), events: batch))
                        batch.removeAll(keepingCapacity: true)
                        if writer == 0, sequence % 250 == 0 { clusterProgress("charges: loaded about \(sequence * 1_000 * UInt64(writers)) events") }
                    }
                    while let line = workload.next() {
                        guard let event = line.event else { continue }
                        batch.append(.valid(event))
                        if batch.count == 1_000 { try await commit() }
                    }
                    if !batch.isEmpty { try await commit() }
                }
            }
            try await group.waitForAll()
        }
        return ContinuousClock.now - start
    }
}
