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
}
