import Foundation
import TallyTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// The agent alone, nothing shipping: its memory idle and paced, and its ingest rates.
extension AgentBenchRun {
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

    /// The CPU time of the agent and of this process (the clients) at one moment; a later
    /// ``perLine(_:)`` gives each one's CPU per line since: steadier than the rate on a host
    /// whose speed drifts, and what a change to the ingest path moves.
    struct IngestCPU {
        let agent: Int32
        let agentSeconds: Double
        let benchSeconds: Double

        init(agent: Int32) {
            self.agent = agent
            agentSeconds = ProcessCPU.seconds(pid: agent)
            benchSeconds = ProcessCPU.seconds(pid: getpid())
        }

        /// "agent / clients" in µs per line since this reading.
        func perLine(_ lines: Int) -> String {
            let now = IngestCPU(agent: agent)
            let per = { (seconds: Double) in seconds * 1e6 / Double(max(1, lines)) }
            return String(format: "%.2f / %.2f", per(now.agentSeconds - agentSeconds), per(now.benchSeconds - benchSeconds))
        }
    }

    func streamIngest(_ options: AgentBench, agent: Int32, into table: inout BenchTable) async throws {
        let connections = options.streamConnections
        let perConnection = options.streamEvents / connections
        progress("socket stream: \(perConnection * connections) events on \(connections) connections")
        let chunksByConnection = try (0..<connections).map {
            try AgentWorkload.chunks(seed: 201 + UInt64($0), lines: perConnection, linesPerChunk: 1000)
        }
        let cpu = IngestCPU(agent: agent)
        let start = ContinuousClock.now
        let run = try await AgentDrivers.stream(path: socket, lines: Array(repeating: perConnection, count: connections)) { connection in
            ChunkList(chunksByConnection[connection])
        }
        let elapsed = ContinuousClock.now - start
        guard run.failures.isEmpty else { throw BenchFailure("socket stream: \(run.failures.joined(separator: "; "))") }
        table.add(
            "socket NDJSON stream, \(connections) conns, 1000-line writes, answer lines", "events/s", rate(run.lines, elapsed), "1,000,000")
        table.add("  answers ok / err / full", "lines", "\(run.ok)/\(run.err)/\(run.full)", "err = invalid lines (0.01%)")
        table.add("  CPU per line, agent / bench clients", "µs", cpu.perLine(run.lines), "2 cores / 1M lines/s = 2")
    }

    func httpIngest(_ options: AgentBench, agent: Int32, into table: inout BenchTable) async throws {
        for (round, connections) in options.connectionCounts.enumerated() {
            progress("HTTP: \(options.httpEvents) events in bodies of 100 on \(connections) connections")
            let requests = AgentDrivers.requests(
                try AgentWorkload.chunks(seed: 301 + UInt64(round), lines: options.httpEvents, linesPerChunk: 100))
            let cpu = IngestCPU(agent: agent)
            let start = ContinuousClock.now
            let run = await AgentDrivers.post(port: agentPort, requests: requests, connections: connections)
            let elapsed = ContinuousClock.now - start
            try check(run)
            table.add("HTTP POST /v1/events, NDJSON bodies of 100, \(connections) conns", "events/s", rate(run.accepted, elapsed), "300,000")
            table.add("  CPU per event, agent / bench clients", "µs", cpu.perLine(run.accepted), "-")
        }
    }

    func check(_ run: HTTPRun) throws {
        guard run.failures.isEmpty else { throw BenchFailure("HTTP: \(run.failures.joined(separator: "; "))") }
        let refused = run.statuses.filter { $0.key != 200 && $0.key != 207 }
        guard refused.isEmpty else { throw BenchFailure("HTTP: answers other than 200/207: \(refused)") }
    }
}
