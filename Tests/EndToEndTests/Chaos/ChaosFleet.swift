import Foundation
import Synchronization
import TallyTestSupport

/// The real processes of a chaos run: collectors on fixed loopback ports (so a restarted one is
/// found where the last one was), each behind its ``FaultProxy``, and agents that list every
/// proxy. The second agent and the first collector run as an ordinary user (``Unprivileged``),
/// as services are deployed. Every process is started through ``ChildSpawner`` (tied to the test
/// process) and killed by ``killAll()`` whatever happened.
final class ChaosFleet: Sendable {
    struct CollectorSlot: Sendable {
        let port: Int
        let httpPort: Int
        let proxy: FaultProxy
    }

    let directory: URL
    let store: String
    let collectors: [CollectorSlot]
    let agentPorts: [Int]
    let spools: [String]
    /// Each agent's spool on a tmpfs of its own, and the SQLite ledger's directory on one (when
    /// the tests run as root), so that a run can fill them.
    let spoolDisks: [TmpfsDisk]
    let ledgerDisk: TmpfsDisk?
    /// The agents' wall clocks, which a run steps.
    let agentClocks: AgentClocks
    private let pricing: String
    private let collectorEnvironment: [String: String]
    private let running: Mutex<(collectors: [ServiceProcess?], agents: [ServiceProcess?])>
    private let everyProcess = Mutex<[(isCollector: Bool, process: ServiceProcess)]>([])

    static let agentReady = #"address=127\.0\.0\.1:([0-9]+)"#

    /// Prepares `directory` (handed to the unprivileged user) and the proxies; starts nothing.
    init(directory: URL, store: String, collectors: Int, agents: Int, seed: UInt64, collectorEnvironment: [String: String]) throws {
        self.directory = directory
        self.store = store
        self.collectorEnvironment = collectorEnvironment
        pricing = directory.appendingPathComponent("pricing.yaml").path
        try FileManager.default.copyItem(atPath: BinaryRunner.packageRoot.appendingPathComponent("deploy/demo-pricing.yaml").path, toPath: pricing)
        self.collectors = try (0..<collectors).map { index in
            let port = try freePort()
            return CollectorSlot(port: port, httpPort: try freePort(), proxy: try FaultProxy(upstreamPort: port, seed: seed &+ UInt64(index)))
        }
        agentPorts = try (0..<agents).map { _ in try freePort() }
        spools = (0..<agents).map { directory.appendingPathComponent("spool-\($0)").path }
        running = Mutex((Array(repeating: nil, count: collectors), Array(repeating: nil, count: agents)))
        var disks: [TmpfsDisk] = []
        var ledgerDisk: TmpfsDisk?
        let ledger = store.hasPrefix("sqlite:") ? URL(fileURLWithPath: String(store.dropFirst("sqlite:".count))).deletingLastPathComponent() : nil
        if let ledger { try FileManager.default.createDirectory(at: ledger, withIntermediateDirectories: true) }
        if TmpfsDisk.available {
            do {
                for spool in spools { disks.append(try TmpfsDisk(at: URL(fileURLWithPath: spool), size: "512m")) }
                if let ledger { ledgerDisk = try TmpfsDisk(at: ledger, size: "2g") }
            } catch {
                for disk in disks { disk.unmount() }
                throw error
            }
        }
        spoolDisks = disks
        self.ledgerDisk = ledgerDisk
        agentClocks = try AgentClocks(directory: directory, agents: agents)
        for index in 0..<agents {
            // Quick reconnects, so that a run spends its time on faults rather than on backoff.
            try """
            spool:
              directory: \(spools[index])
              retry_after: 1s
            reconnect:
              initial: 50ms
              max: 1s
            batch:
              max_events: 500
              linger: 20ms
            """.write(to: agentConfig(index), atomically: true, encoding: .utf8)
        }
        try Unprivileged.handOver(directory)
    }

    static func isUnprivileged(agent index: Int) -> Bool { index % 2 == 1 }
    static func isUnprivileged(collector index: Int) -> Bool { index == 0 }

    private func agentConfig(_ index: Int) -> URL { directory.appendingPathComponent("agent-\(index).yaml") }

    func startCollector(_ index: Int) async throws {
        let slot = collectors[index]
        let process = try await ServiceProcess(
            directory: directory,
            arguments: [
                "--store", store, "--listen", "127.0.0.1:\(slot.port)", "--http", "127.0.0.1:\(slot.httpPort)", "--pricing", pricing,
            ],
            environment: collectorEnvironment, unprivileged: Self.isUnprivileged(collector: index))
        record(process, isCollector: true)
        running.withLock { $0.collectors[index] = process }
    }

    func startAgent(_ index: Int) async throws {
        var arguments = [
            "--config", agentConfig(index).path, "--listen", "127.0.0.1:\(agentPorts[index])", "--agent-id", "chaos-edge-\(index)",
        ]
        for slot in collectors { arguments += ["--collector", "127.0.0.1:\(slot.proxy.port)"] }
        let process = try await ServiceProcess(
            directory: directory, arguments: arguments, environment: agentClocks.environment(of: index), binary: "tally-agent",
            readyPattern: Self.agentReady, unprivileged: Self.isUnprivileged(agent: index))
        record(process, isCollector: false)
        running.withLock { $0.agents[index] = process }
    }

    /// SIGKILL; the slot stays empty until started again.
    func killCollector(_ index: Int) {
        running.withLock { running in
            let process = running.collectors[index]
            running.collectors[index] = nil
            return process
        }?.kill()
    }

    func killAgent(_ index: Int) {
        running.withLock { running in
            let process = running.agents[index]
            running.agents[index] = nil
            return process
        }?.kill()
    }

    /// Processes that died without being told to (a crash is a finding, not a fault).
    var unexpectedExits: [String] {
        let (collectors, agents) = running.withLock { ($0.collectors, $0.agents) }
        var exits: [String] = []
        for (index, process) in collectors.enumerated() where process.map({ !$0.process.isRunning }) ?? false {
            exits.append("collector \(index) exited by itself: \(process.map { String($0.logText.suffix(1500)) } ?? "")")
        }
        for (index, process) in agents.enumerated() where process.map({ !$0.process.isRunning }) ?? false {
            exits.append("agent \(index) exited by itself: \(process.map { String($0.logText.suffix(1500)) } ?? "")")
        }
        return exits
    }

    /// SIGTERM to every running agent, then collector; the exit statuses that were not 0.
    func stopAll() async -> [String] {
        let (collectors, agents) = running.withLock { running in
            defer { running = (running.collectors.map { _ in nil }, running.agents.map { _ in nil }) }
            return (running.collectors, running.agents)
        }
        var failures: [String] = []
        for (index, agent) in agents.enumerated() {
            guard let agent else { continue }
            let status = await agent.stop()
            if status != 0 { failures.append("agent \(index) exited \(status) on SIGTERM") }
        }
        for (index, collector) in collectors.enumerated() {
            guard let collector else { continue }
            let status = await collector.stop()
            if status != 0 { failures.append("collector \(index) exited \(status) on SIGTERM") }
        }
        return failures
    }

    /// Kills every process this fleet ever started, stops the proxies, unmounts the disks.
    func killAll() {
        for (_, process) in everyProcess.withLock({ $0 }) { process.kill() }
        for slot in collectors { slot.proxy.stop() }
        for disk in spoolDisks + [ledgerDisk].compactMap({ $0 }) { disk.unmount() }
    }

    /// The unacknowledged events in agent `index`'s spool.
    func backlog(_ index: Int) async throws -> Int? {
        try await spoolBacklog(spools[index], unprivileged: Self.isUnprivileged(agent: index))
    }

    /// The last lines each running process logged (for a failure's message).
    var logTails: String {
        let (collectors, agents) = running.withLock { ($0.collectors, $0.agents) }
        let named = collectors.enumerated().map { ("collector \($0)", $1) } + agents.enumerated().map { ("agent \($0)", $1) }
        return named.map { name, process in "--- \(name):\n\(process.map { String($0.logText.suffix(1500)) } ?? "(not running)")" }
            .joined(separator: "\n")
    }

    /// How many lines with `text` every collector (or agent) this fleet started has logged.
    func logged(_ text: String, byCollectors: Bool) -> Int {
        everyProcess.withLock { $0 }.filter { $0.isCollector == byCollectors }.reduce(0) {
            $0 + $1.process.logText.components(separatedBy: text).count - 1
        }
    }

    private func record(_ process: ServiceProcess, isCollector: Bool) { everyProcess.withLock { $0.append((isCollector, process)) } }
}
