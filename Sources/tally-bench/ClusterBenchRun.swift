import Foundation
import TallyCollector
import TallyCore
import TallyLedger
import TallyPricing
import TallyTestSupport

/// One `tally-bench cluster` run: the server, the pricing, and its phases in order.
struct ClusterBenchRun {
    let options: ClusterBench
    let root: String
    let server: PostgresTestServer
    let children: ChildList
    let pricing: AggregatePricing
    /// What a collector started with `--pricing` opens its ledger with.
    let ledgerConfiguration: LedgerConfiguration
    let lateWindow: LateWindow

    init(options: ClusterBench, root: String, server: PostgresTestServer, children: ChildList) throws {
        self.options = options
        self.root = root
        self.server = server
        self.children = children
        pricing = AggregatePricing(config: try PricingConfigLoader.load(file: options.pricing))
        let collector = CollectorConfig()
        ledgerConfiguration = collector.ledgerConfiguration(pricing: pricing)
        lateWindow = collector.lateWindow
    }

    func measure(into table: inout BenchTable) async throws {
        let naive = try await naiveBaseline()
        let naiveRate = Double(naive.events) / naive.elapsed.seconds
        let naiveText = "\(grouped(Int(naiveRate))) events/s"
        table.add(
            "naive: \(options.naiveClients) clients, 1 INSERT…ON CONFLICT per event", naiveText, "-",
            "issue measured ~8,700/s")

        let one = try await drain(collectors: 1)
        one.stopAll()
        await one.ledger.shutdown()
        let two = try await drain(collectors: 2)
        let oneRate = Double(one.events) / one.elapsed.seconds
        let twoRate = Double(two.events) / two.elapsed.seconds
        let agents = "\(options.agents) agents × \(grouped(options.events)) (batches of \(grouped(options.agentBatchEvents)))"
        table.add("Tally: \(agents) → 1 collector, durable+deduped", "\(grouped(Int(oneRate))) events/s", naiveText, times(oneRate / naiveRate))
        table.add("Tally: \(agents) → 2 collectors, durable+deduped", "\(grouped(Int(twoRate))) events/s", naiveText, times(twoRate / naiveRate))
        let met = twoRate >= 10 * naiveRate ? "met" : "NOT met"
        table.add("ratio: 2 collectors / naive", times(twoRate / naiveRate), naiveText, "target ≥ 10× (\(met))")
        if options.floorEvents > 0 {
            let floor = try await postgresFloor()
            let floorRate = Double(floor.events) / floor.elapsed.seconds
            let perEvent = floor.postgresCPU / Double(floor.events) * 1_000_000
            table.add(
                "PostgreSQL floor: raw rows only, 1,000 per statement, \(options.naiveClients) clients", "\(grouped(Int(floorRate))) events/s",
                naiveText, times(floorRate / naiveRate))
            let cores = Double(ProcessInfo.processInfo.activeProcessorCount)
            table.add(
                "PostgreSQL floor: server CPU per stored event", "\(fixed(perEvent)) µs", "-",
                "\(Int(cores)) cores / that: \(grouped(Int(cores * 1_000_000 / perEvent))) events/s (\(times(cores * 1_000_000 / perEvent / naiveRate)) naive)"
            )
        }
        for outcome in [one, two] { outcome.report(into: &table) }

        // Only the ledger and one collector (for the HTTP figure) stay up for the charges figures.
        for agent in two.agents { _ = await agent.stop() }
        for collector in two.collectors.dropFirst() { _ = await collector.stop() }
        let charges = ChargesBench(run: self, ledger: two.ledger, httpPort: two.httpPorts.first, url: two.url)
        try await charges.measure(into: &table)
        two.stopAll()
        await two.ledger.shutdown()
    }

    // MARK: Naive baseline

    func naiveBaseline() async throws -> (events: Int, elapsed: Duration) {
        let url = try server.createDatabase("naive")
        let database = try self.database(of: url)
        _ = try server.psql(NaiveInserts.createTable, database: database)
        let rows = try NaiveInserts.rows(lines: options.naiveEvents, seed: 11)
        clusterProgress("naive: \(rows.count) events, one INSERT … ON CONFLICT DO NOTHING each, on \(options.naiveClients) connections")
        let elapsed = try await NaiveInserts.run(server: server, database: database, rows: rows, clients: options.naiveClients)
        let stored = try server.psql("SELECT count(*) FROM naive", database: database)
        clusterProgress("naive: \(stored) rows stored in \(fixed(elapsed.seconds)) s")
        return (rows.count, elapsed)
    }

    // MARK: PostgreSQL floor

    /// ``PostgresFloor`` on a fresh database: the events, the time, and the server's CPU seconds.
    func postgresFloor() async throws -> (events: Int, elapsed: Duration, postgresCPU: Double) {
        let url = try server.createDatabase("floor")
        let database = try self.database(of: url)
        _ = try server.psql(PostgresFloor.createTable, database: database)
        let batches = try PostgresFloor.batches(lines: options.floorEvents, seed: 13)
        let events = batches.reduce(0) { $0 + $1.count }
        clusterProgress("floor: \(events) events, 1,000 per plain INSERT, on \(options.naiveClients) connections")
        let pid = server.pid
        let (elapsed, cpu) = try await PostgresFloor.run(
            server: server, database: database, batches: batches, clients: options.naiveClients,
            serverCPU: { ProcessCPU.secondsWithChildren(pid: pid) })
        let stored = try server.psql("SELECT count(*) FROM floor_events", database: database)
        clusterProgress("floor: \(stored) rows stored in \(fixed(elapsed.seconds)) s, \(fixed(cpu)) s of server CPU")
        return (events, elapsed, cpu)
    }

    // MARK: Tally end to end

    /// What one drain measured, and what is still running after it.
    struct DrainOutcome {
        var collectorCount: Int
        var events: Int
        var elapsed: Duration
        var counts: ReconciliationCounts
        /// CPU seconds during the drain: PostgreSQL (postmaster and backends), collectors, agents,
        /// this process.
        var cpu: (postgres: Double, collectors: Double, agents: Double, bench: Double)
        /// Bytes of WAL the server wrote during the drain (nil: not measured).
        var walBytes: Int?
        var ledger: Ledger
        var agents: [BenchChild]
        var collectors: [BenchChild]
        var httpPorts: [Int]
        /// The drain's database.
        var url: String
        /// The charges calls on the first collector during the drain, and the same calls on it
        /// right after (nil: `--drain-read-interval-ms 0`).
        var reads: (loaded: ChargesPoller.Answers, idle: ChargesPoller.Answers)?

        func stopAll() { for child in agents + collectors { child.killNow() } }

        func report(into table: inout BenchTable) {
            let name = collectorCount == 1 ? "1 collector" : "\(collectorCount) collectors"
            let check =
                counts.received == Int64(events) && counts.balances
                ? "= spooled, balances" : "WARNING: received ≠ spooled or does not balance"
            table.add("  \(name): ledger received / events spooled", "\(grouped(Int(counts.received))) / \(grouped(events))", "-", check)
            table.add(
                "  \(name): accepted / duplicate / late / rejected", "\(counts.accepted)/\(counts.duplicate)/\(counts.late)/\(counts.rejected)",
                "-", "duplicate ≈ 1% (retries)")
            table.add("  \(name): drain time (collector launch → all drained)", "\(fixed(elapsed.seconds)) s")
            table.add(
                "  \(name): CPU s postgres/collectors/agents/bench",
                String(format: "%.1f/%.1f/%.1f/%.1f", cpu.postgres, cpu.collectors, cpu.agents, cpu.bench), "-",
                String(format: "of %.1f core-s (2 cores)", 2 * elapsed.seconds))
            if let walBytes {
                table.add(
                    "  \(name): WAL written per event", "\(grouped(walBytes / max(events, 1))) bytes", "-",
                    "\(grouped(walBytes / 1_048_576)) MiB in the drain")
            }
            guard let reads, !reads.loaded.times.isEmpty, !reads.idle.times.isEmpty else { return }
            let (loaded, idle) = (reads.loaded.times, reads.idle.times)
            table.add("  \(name): charges over HTTP, idle after the drain, p50 / p99", "\(ms(percentile(idle, 50))) / \(ms(percentile(idle, 99))) ms")
            table.add(
                "  \(name): same during the drain (\(grouped(loaded.count)) calls), p50 / p99",
                "\(ms(percentile(loaded, 50))) / \(ms(percentile(loaded, 99))) ms", "-",
                "p99 " + times(percentile(loaded, 99).seconds / max(percentile(idle, 99).seconds, 1e-9)) + " idle")
        }
    }

    /// A fresh database; `options.agents` agents each spool `options.events` lines with no
    /// collector running; then `count` collectors start, and the clock runs from their launch
    /// until every spool is empty and the ledger's reconciliation has received every spooled event.
    func drain(collectors count: Int) async throws -> DrainOutcome {
        let directory = root + "/collectors-\(count)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let url = try server.createDatabase("cluster_\(count)")
        // The first open creates the schema, so no collector start below includes a migration.
        let ledger = try openLedger(url)
        if options.statements > 0 {
            _ = try server.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements", database: database(of: url))
        }
        let helper = try AgentBenchRun(bin: options.bin, root: directory, children: children, batchEvents: options.agentBatchEvents)
        let listenPorts = try (0..<count).map { _ in try freeLoopbackPort() }
        let httpPorts = try (0..<count).map { _ in try freeLoopbackPort() }
        var agents: [(child: BenchChild, port: Int, socket: String)] = []
        for index in 0..<options.agents {
            let port = try freeLoopbackPort()
            let socket = directory + "/agent-\(index).sock"
            // Each agent lists every collector, starting from a different one: the fleet spread
            // evenly over the cluster.
            let collectors = (0..<count).map { listenPorts[(index + $0) % count] }
            let agent = try await helper.startAgent(
                spool: directory + "/spool-\(index)", socket: socket, port: port, collectors: collectors, id: "bench-agent-\(index + 1)")
            agents.append((agent.child, port, socket))
        }
        clusterProgress("\(count) collector(s): spooling \(options.agents) × \(options.events) lines, no collector running")
        let lines = options.events
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (index, agent) in agents.enumerated() {
                let seed = UInt64(100 * count + index)
                let socket = agent.socket
                group.addTask {
                    let workload = try AgentWorkload.workload(seed: seed, lines: lines)
                    let run = try await AgentDrivers.stream(path: socket, lines: [lines]) { _ in
                        GeneratedLines(workload: workload, linesPerChunk: 1000)
                    }
                    guard run.failures.isEmpty else { throw BenchFailure("spooling: \(run.failures.joined(separator: "; "))") }
                }
            }
            try await group.waitForAll()
        }
        var spooled = 0
        for agent in agents {
            guard let events = AgentBenchRun.spoolEvents(port: agent.port) else { throw BenchFailure("no spool gauge on \(agent.port)") }
            spooled += events
        }
        // A server that has run for a while recycles its WAL segments at each checkpoint; a fresh
        // one creates and zero-fills every segment it writes (16 MiB each; a sixth of the server's
        // samples in a drain). The checkpoint leaves the previous phases' segments for recycling, so
        // each drain meets a server in its steady state, as a long-running primary is.
        _ = try server.psql("CHECKPOINT", database: database(of: url))
        clusterProgress("\(count) collector(s): \(spooled) events spooled; starting the collector(s)")

        let agentCPU = agents.reduce(0.0) { $0 + ProcessCPU.seconds(pid: $1.child.pid) }
        let postgresCPU = ProcessCPU.secondsWithChildren(pid: server.pid)
        let benchCPU = ProcessCPU.seconds(pid: getpid())
        let walStart = try? server.psql("SELECT pg_current_wal_lsn()", database: database(of: url))
        let store = url + "&pool_size=\(options.poolSize)"
        if options.statements > 0 { _ = try server.psql("SELECT pg_stat_statements_reset()", database: database(of: url)) }
        let start = ContinuousClock.now
        var collectors: [BenchChild] = []
        for index in 0..<count {
            let collector = try BenchChild(
                options.bin + "/tally-collector",
                [
                    "--store", store, "--listen", "127.0.0.1:\(listenPorts[index])", "--http", "127.0.0.1:\(httpPorts[index])",
                    "--pricing", options.pricing,
                ])
            children.add(collector)
            collectors.append(collector)
        }
        // A dashboard on the first collector, from the moment it serves HTTP.
        let interval = options.drainReadIntervalMs
        let (readPort, tenant) = (httpPorts[0], options.tenant)
        let dashboard: Task<ChargesPoller?, Never>? =
            interval > 0
            ? Task {
                while BenchHTTPConnection.get(port: readPort, "/healthz") == nil {
                    guard !Task.isCancelled else { return nil }
                    try? await Task.sleep(for: .milliseconds(5))
                }
                return ChargesPoller(port: readPort, tenant: tenant, interval: .milliseconds(interval))
            } : nil
        let counts: ReconciliationCounts
        do {
            counts = try await waitForDrain(
                agents: agents.map { (child: $0.child, port: $0.port) }, collectors: collectors, ledger: ledger, spooled: spooled, start: start)
        } catch {
            dashboard?.cancel()
            _ = await dashboard?.value?.stop()
            throw error
        }
        let elapsed = ContinuousClock.now - start
        let loaded = await dashboard?.value?.stop()
        let cpu = (
            postgres: ProcessCPU.secondsWithChildren(pid: server.pid) - postgresCPU,
            collectors: collectors.reduce(0.0) { $0 + ProcessCPU.seconds(pid: $1.pid) },
            agents: agents.reduce(0.0) { $0 + ProcessCPU.seconds(pid: $1.child.pid) } - agentCPU,
            bench: ProcessCPU.seconds(pid: getpid()) - benchCPU
        )
        let walBytes = walStart.flatMap { lsn in
            (try? server.psql("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '\(lsn)')::bigint", database: database(of: url)))
                .flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        }
        // The same calls on the same collector once it is idle (after the CPU figures).
        var reads: (loaded: ChargesPoller.Answers, idle: ChargesPoller.Answers)?
        if let loaded {
            if let failure = loaded.failure { throw BenchFailure("charges during the drain: \(failure)") }
            let idle = await ChargesPoller(
                port: readPort, tenant: tenant, interval: .milliseconds(interval), limit: max(loaded.times.count, 200)
            ).finish()
            if let failure = idle.failure { throw BenchFailure("charges after the drain: \(failure)") }
            reads = (loaded, idle)
        }
        clusterProgress("\(count) collector(s): drained \(spooled) events in \(fixed(elapsed.seconds)) s")
        if options.statements > 0 { try printStatements(url: url, per: spooled, unit: "event") }
        return DrainOutcome(
            collectorCount: count, events: spooled, elapsed: elapsed, counts: counts, cpu: cpu, walBytes: walBytes, ledger: ledger,
            agents: agents.map(\.child), collectors: collectors, httpPorts: httpPorts, url: url, reads: reads)
    }

    /// Polls the agents' spool gauges every 50 ms; once all are empty, the ledger's
    /// reconciliation, until it has received `spooled` events (or 10 s after the spools emptied:
    /// the shortfall is then reported, not waited for).
    func waitForDrain(
        agents: [(child: BenchChild, port: Int)], collectors: [BenchChild], ledger: Ledger, spooled: Int,
        start: ContinuousClock.Instant
    ) async throws -> ReconciliationCounts {
        let deadline = start + .seconds(Int64(spooled / 2_000 + 300))
        var lastReport = start
        var emptySince: ContinuousClock.Instant?
        while true {
            guard ContinuousClock.now < deadline else { throw BenchFailure("the drain did not finish within \(deadline - start)") }
            for child in agents.map(\.child) + collectors where !child.isRunning {
                throw BenchFailure("\(child.name) exited during the drain: \(child.logTail)")
            }
            let left = agents.map { AgentBenchRun.spoolEvents(port: $0.port) }
            let remaining = left.reduce(0) { $0 + ($1 ?? spooled) }
            if remaining == 0 {
                let counts = try await ledger.perform { store throws(LedgerError) in
                    try store.reconciliation(ReconciliationFilter()).total
                }
                let since = emptySince ?? ContinuousClock.now
                emptySince = since
                if counts.received >= Int64(spooled) || ContinuousClock.now - since > .seconds(10) { return counts }
            }
            if ContinuousClock.now - lastReport > .seconds(10) {
                clusterProgress("drain: \(remaining) events left in the spools")
                lastReport = ContinuousClock.now
            }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// The ledger at `url` as a collector opens it: `poolSize` writers and a reader.
    func openLedger(_ url: String) throws -> Ledger {
        let writers = try (0..<options.poolSize).map { _ in try LedgerStores.open(url, configuration: ledgerConfiguration) }
        return Ledger(stores: writers, reader: try LedgerStores.open(url, configuration: ledgerConfiguration))
    }

    // MARK: Where PostgreSQL's time went

    func database(of url: String) throws -> String {
        guard let name = PostgresTestServer.databaseName(in: url) else { throw BenchFailure("no database name in \(url)") }
        return name
    }

    /// The statements that took most of the server's execution time since the last reset, with
    /// microseconds per `unit` (`--statements N`).
    func printStatements(url: String, per count: Int, unit: String) throws {
        let top = try server.psql(
            """
            SELECT round(total_exec_time::numeric * 1000 / \(max(count, 1)), 2) || ' us/\(unit)  ' || calls || ' calls  '
                || rows || ' rows  ' || round(mean_exec_time::numeric, 3) || ' ms mean  '
                || regexp_replace(left(query, 110), '\\s+', ' ', 'g')
            FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
            ORDER BY total_exec_time DESC LIMIT \(options.statements)
            """, database: try database(of: url))
        for line in top.split(separator: "\n") { clusterProgress("  statement: \(line)") }
    }
}
