import Foundation
import TallyTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// The backlog: filling the spool, restarting on it, draining it into a collector (with the
/// reads timed meanwhile), and `tallyctl spool drain` of a stopped agent's spool.
extension AgentBenchRun {
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
