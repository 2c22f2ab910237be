import Foundation
import TallyTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// One `tally-bench agent` run: the ports, directories and child processes, and its phases in
/// order. The agent's collector address is reserved from the start, but no collector listens
/// there until the drain phase: every ingest figure is the agent alone, nothing ships.
struct AgentBenchRun {
    let bin: String
    let root: String
    let children: ChildList
    let agentPort: Int
    let collectorPort: Int
    let collectorHTTPPort: Int
    let spool: String
    let socket: String
    let config: String

    /// `fsync`: the agent's `spool.fsync` setting; `batchEvents`: its `batch.max_events` (nil:
    /// the agent's defaults).
    init(bin: String, root: String, children: ChildList, fsync: String? = nil, batchEvents: Int? = nil) throws {
        self.bin = bin
        self.root = root
        self.children = children
        for name in ["tally-agent", "tally-collector", "tallyctl"] where !FileManager.default.isExecutableFile(atPath: bin + "/" + name) {
            throw BenchFailure("\(bin)/\(name) is missing: build with `swift build -c release` first")
        }
        agentPort = try freeLoopbackPort()
        collectorPort = try freeLoopbackPort()
        collectorHTTPPort = try freeLoopbackPort()
        spool = root + "/spool"
        socket = root + "/agent.sock"
        config = root + "/agent.yaml"
        // Quick reconnects, so the drain starts within 250 ms of the collector's start.
        let spoolSettings = fsync.map { "spool:\n  fsync: \($0)\n" } ?? ""
        let batchSettings = batchEvents.map { "batch:\n  max_events: \($0)\n" } ?? ""
        try ("reconnect:\n  initial: 50ms\n  max: 250ms\n" + spoolSettings + batchSettings).write(
            toFile: config, atomically: true, encoding: .utf8)
    }

    func measure(_ options: AgentBench, into table: inout BenchTable) async throws {
        var agent = try await startAgent()
        table.add("agent start until /healthz answers (empty spool)", "s", fixed(agent.ready.seconds), "-")
        try await idleMemory(agent.child, into: &table)
        try await pacedMemory(agent.child, options, into: &table)
        try await streamIngest(options, agent: agent.child.pid, into: &table)
        try await httpIngest(options, agent: agent.child.pid, into: &table)
        if let memory = agent.child.memory() {
            table.add("agent VmHWM after the ingest runs", "MiB", megabytes(memory.peakKB), "-")
        }
        try await fill(options, into: &table)
        agent = try await restart(agent.child, into: &table)
        try await drain(agent.child, options, into: &table)
        if options.ctlDrainEvents > 0 { try await ctlDrain(options, into: &table) }
        _ = await agent.child.stop()
    }

    // MARK: Processes

    /// An agent child, when it was launched, and how long until it served.
    struct StartedAgent {
        var child: BenchChild
        var launched: ContinuousClock.Instant
        var ready: Duration
    }

    func startAgent(
        spool: String? = nil, socket: String? = nil, port: Int? = nil, collectors: [Int]? = nil, id: String = "bench-agent"
    ) async throws -> StartedAgent {
        let port = port ?? agentPort
        let arguments =
            [
                "--config", config, "--spool", spool ?? self.spool, "--listen", "127.0.0.1:\(port)", "--socket", socket ?? self.socket,
                "--agent-id", id, "--default-metric", "api_calls",
            ] + (collectors ?? [collectorPort]).flatMap { ["--collector", "127.0.0.1:\($0)"] }
        let launched = ContinuousClock.now
        let child = try BenchChild(bin + "/tally-agent", arguments)
        children.add(child)
        try await waitUntilServing(child, port: port, path: "/healthz")
        return StartedAgent(child: child, launched: launched, ready: ContinuousClock.now - launched)
    }

    /// Polls `GET path` every 2 ms until it is answered (any status).
    func waitUntilServing(_ child: BenchChild, port: Int, path: String, timeout: Duration = .seconds(120)) async throws {
        let deadline = ContinuousClock.now + timeout
        while BenchHTTPConnection.get(port: port, path) == nil {
            guard child.isRunning else { throw BenchFailure("\(child.name) exited: \(child.logTail)") }
            guard ContinuousClock.now < deadline else { throw BenchFailure("\(child.name) did not serve within \(timeout): \(child.logTail)") }
            try await Task.sleep(for: .milliseconds(2))
        }
    }

    /// The agent's `tally_agent_spool_events` gauge (`GET /metrics` refreshes it).
    static func spoolEvents(port: Int) -> Int? {
        guard let answer = BenchHTTPConnection.get(port: port, "/metrics"), answer.status == 200 else { return nil }
        for line in answer.body.split(separator: "\n") where line.hasPrefix("tally_agent_spool_events ") {
            return line.split(separator: " ").last.flatMap { Double($0) }.map { Int($0) }
        }
        return nil
    }

    func spoolEvents() throws -> Int {
        guard let events = Self.spoolEvents(port: agentPort) else { throw BenchFailure("no tally_agent_spool_events on the agent's /metrics") }
        return events
    }

    // MARK: Memory

    /// VmRSS sampled every 100 ms for 3 s once the agent serves (the settle time is the point of
    /// the figure: the sampling is what is measured).
    func idleMemory(_ agent: BenchChild, into table: inout BenchTable) async throws {
        var samples: [Int] = []
        let until = ContinuousClock.now + .seconds(3)
        while ContinuousClock.now < until {
            if let memory = agent.memory() { samples.append(memory.rssKB) }
            try await Task.sleep(for: .milliseconds(100))
        }
        guard let last = samples.last, let most = samples.max() else { throw BenchFailure("cannot read the agent's /proc status") }
        table.add("agent RSS idle (3 s after it serves; last sample)", "MiB", megabytes(last), "< 16 MB")
        table.add("agent RSS idle, highest sample", "MiB", megabytes(most), "< 16 MB")
        if let parts = ProcessMemory.breakdown(pid: agent.pid) {
            table.add(
                "agent RSS idle: its code / rest of its binary / shared libraries / anonymous", "MiB",
                [parts.code, parts.data, parts.libraries, parts.anonymous].map(megabytes).joined(separator: " / "),
                "code: functions laid out by scripts/agent.order")
        }
    }

    /// HTTP bodies of 100 events at `pacedRate` for `pacedSeconds`, RSS sampled every 100 ms.
    func pacedMemory(_ agent: BenchChild, _ options: AgentBench, into table: inout BenchTable) async throws {
        let lines = options.pacedRate * options.pacedSeconds
        progress("paced run: \(lines) events at \(options.pacedRate)/s over HTTP")
        let requests = AgentDrivers.requests(try AgentWorkload.chunks(seed: 101, lines: lines, linesPerChunk: 100))
        let pid = agent.pid
        let sampler = Task { () -> [Int] in
            var samples: [Int] = []
            while !Task.isCancelled {
                if let memory = ProcessMemory.read(pid: pid) { samples.append(memory.rssKB) }
                try? await Task.sleep(for: .milliseconds(100))
            }
            return samples
        }
        let start = ContinuousClock.now
        let run = await AgentDrivers.post(
            port: agentPort, requests: requests, connections: 8, every: .seconds(100) / options.pacedRate)
        let elapsed = ContinuousClock.now - start
        sampler.cancel()
        let samples = await sampler.value
        try check(run)
        let steady = samples.suffix(samples.count / 2).sorted()
        let median = steady.isEmpty ? 0 : steady[steady.count / 2]
        table.add("paced HTTP ingest achieved (target \(grouped(options.pacedRate))/s, 8 conns)", "events/s", rate(run.accepted, elapsed), "50,000")
        table.add("agent RSS while paced, median of the 2nd half", "MiB", megabytes(median), "< 32 MB")
        table.add("agent RSS while paced, highest sample", "MiB", megabytes(samples.max() ?? 0), "< 32 MB")
        table.add("agent VmHWM after the paced run (since start)", "MiB", megabytes(agent.memory()?.peakKB ?? 0), "< 32 MB")
    }

    // MARK: Ingest rates

    /// CPU per line of the agent and of this process (the clients) over a run: steadier than
    /// the rate on a host whose speed drifts, and what a change to the ingest path moves.
    func cpuPerLine(agent: Int32, lines: Int, since before: (agent: Double, bench: Double)) -> String {
        let agentCPU = ProcessCPU.seconds(pid: agent) - before.agent
        let benchCPU = ProcessCPU.seconds(pid: getpid()) - before.bench
        return String(format: "%.2f / %.2f", agentCPU * 1e6 / Double(max(1, lines)), benchCPU * 1e6 / Double(max(1, lines)))
    }

    func streamIngest(_ options: AgentBench, agent: Int32, into table: inout BenchTable) async throws {
        let connections = options.streamConnections
        let perConnection = options.streamEvents / connections
        progress("socket stream: \(perConnection * connections) events on \(connections) connections")
        let chunksByConnection = try (0..<connections).map {
            try AgentWorkload.chunks(seed: 201 + UInt64($0), lines: perConnection, linesPerChunk: 1000)
        }
        let cpu = (agent: ProcessCPU.seconds(pid: agent), bench: ProcessCPU.seconds(pid: getpid()))
        let start = ContinuousClock.now
        let run = try await AgentDrivers.stream(path: socket, lines: Array(repeating: perConnection, count: connections)) { connection in
            ChunkList(chunksByConnection[connection])
        }
        let elapsed = ContinuousClock.now - start
        guard run.failures.isEmpty else { throw BenchFailure("socket stream: \(run.failures.joined(separator: "; "))") }
        table.add(
            "socket NDJSON stream, \(connections) conns, 1000-line writes, answer lines", "events/s", rate(run.lines, elapsed), "1,000,000")
        table.add("  answers ok / err / full", "lines", "\(run.ok)/\(run.err)/\(run.full)", "err = invalid lines (0.01%)")
        table.add("  CPU per line, agent / bench clients", "µs", cpuPerLine(agent: agent, lines: run.lines, since: cpu), "2 cores / 1M lines/s = 2")
    }

    func httpIngest(_ options: AgentBench, agent: Int32, into table: inout BenchTable) async throws {
        for (round, connections) in options.connectionCounts.enumerated() {
            progress("HTTP: \(options.httpEvents) events in bodies of 100 on \(connections) connections")
            let requests = AgentDrivers.requests(
                try AgentWorkload.chunks(seed: 301 + UInt64(round), lines: options.httpEvents, linesPerChunk: 100))
            let cpu = (agent: ProcessCPU.seconds(pid: agent), bench: ProcessCPU.seconds(pid: getpid()))
            let start = ContinuousClock.now
            let run = await AgentDrivers.post(port: agentPort, requests: requests, connections: connections)
            let elapsed = ContinuousClock.now - start
            try check(run)
            table.add("HTTP POST /v1/events, NDJSON bodies of 100, \(connections) conns", "events/s", rate(run.accepted, elapsed), "300,000")
            table.add("  CPU per event, agent / bench clients", "µs", cpuPerLine(agent: agent, lines: run.accepted, since: cpu), "-")
        }
    }

    func check(_ run: HTTPRun) throws {
        guard run.failures.isEmpty else { throw BenchFailure("HTTP: \(run.failures.joined(separator: "; "))") }
        let refused = run.statuses.filter { $0.key != 200 && $0.key != 207 }
        guard refused.isEmpty else { throw BenchFailure("HTTP: answers other than 200/207: \(refused)") }
    }

    // MARK: Backlog, restart, drain

    /// Streams generated lines until the spool holds `backlog` events and `restartSpoolMb` MiB.
    func fill(_ options: AgentBench, into table: inout BenchTable) async throws {
        var round: UInt64 = 0
        let start = ContinuousClock.now
        var sent = 0
        while true {
            let events = try spoolEvents()
            let bytes = directoryBytes(spool)
            var missing = options.backlog - events
            let targetBytes = options.restartSpoolMb << 20
            if missing <= 0 && bytes < targetBytes {
                missing = max(100_000, Int(Double(targetBytes - bytes) / Double(max(bytes, 1)) * Double(max(events, 1))) + 1000)
            }
            guard missing > 0, round < 8 else { break }
            progress("filling the spool: \(events) events, \(bytes >> 20) MiB; \(missing) more")
            let connections = 2
            let perConnection = (missing + connections - 1) / connections
            let workloads = try (0..<connections).map { try AgentWorkload.workload(seed: 401 + round * 10 + UInt64($0), lines: perConnection) }
            let run = try await AgentDrivers.stream(path: socket, lines: Array(repeating: perConnection, count: connections)) { connection in
                GeneratedLines(workload: workloads[connection], linesPerChunk: 1000)
            }
            guard run.failures.isEmpty else { throw BenchFailure("filling: \(run.failures.joined(separator: "; "))") }
            sent += run.lines
            round += 1
        }
        let elapsed = ContinuousClock.now - start
        guard sent > 0 else {
            // The ingest runs before it left the spool full enough: there was nothing to time.
            let events = try spoolEvents()
            table.add(
                "backlog fill over the socket (generating lines meanwhile)", "events/s", "-",
                "not needed: the ingest runs left \(events) events, \(directoryBytes(spool) >> 20) MiB")
            return
        }
        table.add("backlog fill over the socket (generating lines meanwhile)", "events/s", rate(sent, elapsed), "-")
    }

    /// SIGTERM, start again on the same spool, and time until it serves.
    func restart(_ agent: BenchChild, into table: inout BenchTable) async throws -> StartedAgent {
        let events = try spoolEvents()
        let bytes = directoryBytes(spool)
        let size = "\(bytes >> 20) MiB"
        progress("restart with \(size), \(events) events")
        let stopping = ContinuousClock.now
        let status = await agent.stop()
        let stopped = ContinuousClock.now - stopping
        guard status == 0 else { throw BenchFailure("the agent exited \(status) on SIGTERM: \(agent.logTail)") }
        let restarted = try await startAgent()
        let probe =
            #"{"tenant":"bench","metric":"api_calls","quantity":1,"id":"restart-probe","timestamp":""#
            + ISO8601DateFormatter().string(from: Date()) + #""}"#
        var client = try BenchHTTPConnection(port: agentPort)
        let answer = try client.exchange(BenchHTTPConnection.request("POST", "/v1/events", body: Array(probe.utf8)))
        let accepted = ContinuousClock.now - restarted.launched
        client.close()
        guard answer.status == 200 else {
            throw BenchFailure("the probe POST after the restart got \(answer.status): \(String(decoding: answer.body, as: UTF8.self))")
        }
        let recovered = try spoolEvents()
        table.add("spool before the restart", "MiB", String(bytes >> 20), "~1 GB (\(grouped(events)) events)")
        table.add("agent stop (SIGTERM until exit), \(size) spool", "s", fixed(stopped.seconds), "-")
        table.add("agent restart until /healthz answers, \(size) spool", "s", fixed(restarted.ready.seconds), "< 1 s")
        table.add("agent restart until a POST is accepted, \(size) spool", "s", fixed(accepted.seconds), "< 1 s")
        table.add("events in the spool after the restart (+1 probe)", "events", grouped(recovered), "= \(grouped(events + 1))")
        return restarted
    }

    func drain(_ agent: BenchChild, _ options: AgentBench, into table: inout BenchTable) async throws {
        let backlog = try spoolEvents()
        progress("drain: starting the collector for \(backlog) events")
        let store = root + "/collector"
        try FileManager.default.createDirectory(atPath: store, withIntermediateDirectories: true)
        let collector = try BenchChild(
            bin + "/tally-collector",
            [
                "--store", "sqlite:\(store)/ledger.db", "--listen", "127.0.0.1:\(collectorPort)", "--http", "127.0.0.1:\(collectorHTTPPort)",
                "--pricing", options.pricing,
            ])
        children.add(collector)
        try await waitUntilServing(collector, port: collectorHTTPPort, path: "/v1/reconciliation")
        let start = ContinuousClock.now
        let cpuAtStart = (
            agent: ProcessCPU.seconds(pid: agent.pid), collector: ProcessCPU.seconds(pid: collector.pid), bench: ProcessCPU.seconds(pid: getpid())
        )
        let serverAtStart = ServerChargesTimes.read(port: collectorHTTPPort)
        let threadsAtStart = ThreadSchedule.threads(pid: collector.pid)
        let agentThreadsAtStart = ThreadSchedule.threads(pid: agent.pid)
        // A dashboard polling one tenant's charges for the whole drain.
        let loaded =
            options.readIntervalUs > 0
            ? ChargesPoller(port: collectorHTTPPort, tenant: options.tenant, interval: .microseconds(options.readIntervalUs)) : nil
        let deadline = start + .seconds(Int64(backlog / 5_000 + 300))
        var highestRSS = 0
        var left = backlog
        var lastReport = start
        while left > 0 {
            guard ContinuousClock.now < deadline else { throw BenchFailure("the drain did not finish: \(left) events left") }
            guard agent.isRunning, collector.isRunning else { throw BenchFailure("a process exited: \(agent.logTail) \(collector.logTail)") }
            try await Task.sleep(for: .milliseconds(100))
            if let memory = agent.memory() { highestRSS = max(highestRSS, memory.rssKB) }
            left = try spoolEvents()
            if ContinuousClock.now - lastReport > .seconds(10) {
                progress("drain: \(left) events left")
                lastReport = ContinuousClock.now
            }
        }
        let elapsed = ContinuousClock.now - start
        let threadsAtEnd = ThreadSchedule.threads(pid: collector.pid)
        let writer = ThreadSchedule.busiest(prefix: "tally-writer", from: threadsAtStart, to: threadsAtEnd)
        let collectorThreads = ThreadSchedule.runningByName(from: threadsAtStart, to: threadsAtEnd)
        let agentThreads = ThreadSchedule.runningByName(from: agentThreadsAtStart, to: ThreadSchedule.threads(pid: agent.pid))
        let cpu = (
            agent: ProcessCPU.seconds(pid: agent.pid) - cpuAtStart.agent, collector: ProcessCPU.seconds(pid: collector.pid) - cpuAtStart.collector,
            bench: ProcessCPU.seconds(pid: getpid()) - cpuAtStart.bench
        )
        let underIngest = await loaded?.stop()
        let serverAfterDrain = ServerChargesTimes.read(port: collectorHTTPPort)
        let serverUnderIngest = serverAfterDrain?.since(serverAtStart)
        let agentPeak = agent.memory()?.peakKB ?? 0
        let collectorPeak = collector.memory()?.peakKB ?? 0
        table.add("drain: backlog in the agent's spool", "events", grouped(backlog), "10,000,000")
        table.add("drain: agent ships it all, collector start to empty spool", "s", fixed(elapsed.seconds), "-")
        table.add("drain: rate", "events/s", rate(backlog, elapsed), "250,000 (end to end)")
        table.add("drain: agent VmHWM (restart + recovery + drain)", "MiB", megabytes(agentPeak), "< 64 MB")
        table.add("drain: agent highest RSS sample during the drain", "MiB", megabytes(highestRSS), "< 64 MB")
        table.add("drain: collector VmHWM", "MiB", megabytes(collectorPeak), "-")
        // Where the end-to-end rate's limit is: CPU per event of each process. The cores divided
        // by their sum is the rate this machine could reach if nothing ever waited.
        func micros(_ seconds: Double) -> String { String(format: "%.2f", seconds * 1e6 / Double(max(1, backlog))) }
        let perEvent = (cpu.agent + cpu.collector) / Double(max(1, backlog))
        let cores = ProcessInfo.processInfo.activeProcessorCount
        table.add(
            "drain: CPU per event, agent / collector (bench reads: \(micros(cpu.bench)))", "µs", "\(micros(cpu.agent)) / \(micros(cpu.collector))",
            "-")
        table.add(
            "drain: ceiling from that CPU on \(cores) cores (cores / CPU per event)", "events/s",
            perEvent > 0 ? grouped(Int(Double(cores) / perEvent)) : "-", "250,000")
        table.add(
            "drain: cores busy (agent + collector CPU / wall time)", "cores",
            String(format: "%.2f", (cpu.agent + cpu.collector) / max(elapsed.seconds, 1e-9)),
            "\(cores)")
        // Which threads the CPU went to (by the names Tally gives its threads): what a change
        // to one of them can gain.
        func split(_ threads: [String: UInt64], _ names: [String]) -> String {
            let named = names.map { name in threads[name] ?? 0 }
            let other = threads.values.reduce(0, +) - named.reduce(0, +)
            return (named + [other]).map { String(format: "%.2f", Double($0) / 1e3 / Double(max(1, backlog))) }.joined(separator: " / ")
        }
        table.add(
            "drain: collector CPU per event, writer / preparation / checkpoint / other threads", "µs",
            split(collectorThreads, ["tally-writer", "tally-prepare", "tally-checkpt"]), "-")
        table.add(
            "drain: agent CPU per event, encoding / spool I/O / other threads", "µs", split(agentThreads, ["tally-encode", "tally-spool-io"]), "-")
        if let writer {
            table.add(
                "drain: ledger writer thread running / waiting for a core / blocked (fsync, no batch)", "% of wall",
                writer.split(over: elapsed), "running 100% = writer-bound")
        }
        try reconcile(agent: "bench-agent", expected: backlog, into: &table)
        if let underIngest { try await readsUnderIngest(underIngest, serverUnderIngest, since: serverAfterDrain, options, into: &table) }
    }

    /// The charges call's latency while the agent drained at full speed, beside the same call
    /// on the idle collector (same ledger, same connection pattern) measured right after.
    func readsUnderIngest(
        _ loaded: ChargesPoller.Answers, _ serverLoaded: ServerChargesTimes?, since serverBefore: ServerChargesTimes?, _ options: AgentBench,
        into table: inout BenchTable
    ) async throws {
        if let failure = loaded.failure { throw BenchFailure("charges during the drain: \(failure)") }
        let calls = max(loaded.times.count, 2_000)
        progress("reads: \(calls) charges calls on the idle collector")
        let idle = await ChargesPoller(
            port: collectorHTTPPort, tenant: options.tenant, interval: .microseconds(options.readIntervalUs), limit: calls
        ).finish()
        if let failure = idle.failure { throw BenchFailure("charges on the idle collector: \(failure)") }
        let path = "GET /v1/tenants/\(options.tenant)/charges"
        table.add("\(path), idle collector, p50 / p99", "ms", ms(percentile(idle.times, 50)) + " / " + ms(percentile(idle.times, 99)), "baseline")
        table.add(
            "same during the drain (\(grouped(loaded.times.count)) calls, 1 per \(options.readIntervalUs / 1000) ms), p50 / p99", "ms",
            ms(percentile(loaded.times, 50)) + " / " + ms(percentile(loaded.times, 99)), "p99 ≤ 2× idle")
        let ratio = percentile(idle.times, 99) > .zero ? percentile(loaded.times, 99).seconds / percentile(idle.times, 99).seconds : 0
        table.add("  p99 during the drain / idle p99", "×", String(format: "%.1f", ratio), "≤ 2.0")
        // The same calls inside the collector (its request histogram, router to answer).
        if let serverLoaded, let serverIdle = ServerChargesTimes.read(port: collectorHTTPPort)?.since(serverBefore) {
            table.add("  inside the collector, idle: mean / p99 (histogram bucket)", "ms", serverIdle.summary, "-")
            table.add("  inside the collector, during the drain: mean / p99 (histogram bucket)", "ms", serverLoaded.summary, "-")
        }
    }

    /// The collector's reconciliation for `agent`: received must equal what was spooled.
    func reconcile(agent: String, expected: Int, into table: inout BenchTable) throws {
        struct Answer: Decodable {
            struct Counts: Decodable { var received, accepted, duplicate, late, rejected: Int }
            var total: Counts
        }
        guard let answer = BenchHTTPConnection.get(port: collectorHTTPPort, "/v1/reconciliation?agent=\(agent)"), answer.status == 200 else {
            throw BenchFailure("no reconciliation from the collector")
        }
        let counts = try JSONDecoder().decode(Answer.self, from: Data(answer.body.utf8)).total
        table.add("  collector received from \(agent)", "events", grouped(counts.received), "= \(grouped(expected))")
        table.add(
            "  accepted / duplicate / late / rejected", "events",
            "\(counts.accepted)/\(counts.duplicate)/\(counts.late)/\(counts.rejected)", "duplicate ~1% (retries)")
    }

    /// A second agent spools `ctlDrainEvents` with no collector, is stopped, and `tallyctl spool
    /// drain` ships its spool; its peak RSS is read from /proc while it runs.
    func ctlDrain(_ options: AgentBench, into table: inout BenchTable) async throws {
        let spool = root + "/spool-ctl"
        let socket = root + "/ctl.sock"
        let port = try freeLoopbackPort()
        let nobody = try freeLoopbackPort()
        let agent = try await startAgent(spool: spool, socket: socket, port: port, collectors: [nobody], id: "bench-ctl").child
        progress("tallyctl spool drain: spooling \(options.ctlDrainEvents) events")
        let perConnection = options.ctlDrainEvents
        let workload = try AgentWorkload.workload(seed: 501, lines: perConnection)
        let run = try await AgentDrivers.stream(path: socket, lines: [perConnection]) { _ in
            GeneratedLines(workload: workload, linesPerChunk: 1000)
        }
        guard run.failures.isEmpty else { throw BenchFailure("filling: \(run.failures.joined(separator: "; "))") }
        guard let spooled = Self.spoolEvents(port: port) else { throw BenchFailure("no spool gauge on the second agent") }
        guard await agent.stop() == 0 else { throw BenchFailure("the second agent did not stop cleanly: \(agent.logTail)") }
        let start = ContinuousClock.now
        let ctl = try BenchChild(
            bin + "/tallyctl", ["spool", "drain", "--spool", spool, "--collector", "127.0.0.1:\(collectorPort)", "--agent-id", "bench-ctl"])
        children.add(ctl)
        var peak = 0
        while ctl.isRunning {
            if let memory = ctl.memory() { peak = max(peak, memory.peakKB) }
            try await Task.sleep(for: .milliseconds(20))
        }
        let elapsed = ContinuousClock.now - start
        guard ctl.process.terminationStatus == 0 else { throw BenchFailure("tallyctl spool drain failed: \(ctl.logTail)") }
        table.add("tallyctl spool drain of a stopped agent's spool", "events", grouped(spooled), "-")
        table.add("tallyctl spool drain: rate (process start to exit)", "events/s", rate(spooled, elapsed), "-")
        table.add("tallyctl spool drain: VmHWM (last read before exit)", "MiB", megabytes(peak), "< 64 MB (agent's)")
        try reconcile(agent: "bench-ctl", expected: spooled, into: &table)
    }
}
