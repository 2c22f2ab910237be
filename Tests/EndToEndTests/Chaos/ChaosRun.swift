import Foundation
import Synchronization
import TallyCore
import TallyTestSupport

/// The faults a chaos run injects, each at a random instant from the run's seed.
enum ChaosFault: String, CaseIterable, Sendable {
    case agentKill = "agent SIGKILL + restart"
    case collectorKill = "collector SIGKILL + restart"
    case databaseKill = "PostgreSQL SIGKILL + restart"
    case spoolDiskFull = "agent's spool disk full, then space"
    case ledgerDiskFull = "ledger disk full, then space"
    case ledgerReadOnly = "ledger read-only (PostgreSQL), then writable"
    case agentClockSkew = "agent clock stepped by minutes"
    case connectionCut = "proxy: connections cut"
    case delay = "proxy: frames delayed"
    case lostAcks = "proxy: acks dropped"
    case duplicateBatches = "proxy: batches duplicated"
    case reorderedBatches = "proxy: batches reordered"
    case clientRetry = "client retries of acknowledged requests"
}

/// How a chaos run goes: its seed, how long it injects faults, what it runs against.
struct ChaosConfiguration: Sendable {
    var seed: UInt64
    /// At least this many fault cycles...
    var cycles: Int
    /// ... and, when set, cycles until this much time has passed (the long form).
    var duration: Duration?
    var collectors = 1
    var agents = 2
    var writers = 4
    /// How often each fault is picked, relative to the others.
    var weights: [ChaosFault: Int] = [
        .agentKill: 3, .collectorKill: 3, .databaseKill: 2, .spoolDiskFull: 2, .ledgerDiskFull: 2, .ledgerReadOnly: 2,
        .agentClockSkew: 2, .connectionCut: 2, .delay: 1, .lostAcks: 2, .duplicateBatches: 1, .reorderedBatches: 1, .clientRetry: 2,
    ]
    /// Extra environment of every collector (a deliberately broken variant's switch).
    var collectorEnvironment: [String: String] = [:]

    /// The short form, or what `TALLY_CHAOS_SEED` and `TALLY_CHAOS_DURATION` (seconds) ask for
    /// (`make chaos SEED=… DURATION=…`).
    static func fromEnvironment(cycles: Int = 24) -> ChaosConfiguration {
        let environment = ProcessInfo.processInfo.environment
        let seed = environment["TALLY_CHAOS_SEED"].flatMap { UInt64($0) } ?? UInt64.random(in: 1...999_999)
        let duration = environment["TALLY_CHAOS_DURATION"].flatMap { Int($0) }.map { Duration.seconds($0) }
        return ChaosConfiguration(seed: seed, cycles: cycles, duration: duration)
    }
}

/// One chaos run: real binaries, a workload of unique events, faults at random instants from the
/// seed, then a drain and the checks (``ChaosVerdict``) against the oracle.
///
/// The seed fixes the fault schedule (which fault, where, after how long) and the workload's
/// content; the interleaving with the processes' own timing is the machine's, so a replay hits
/// the same faults in the same order, not the same bytes.
struct ChaosRun {
    let configuration: ChaosConfiguration
    let store: String
    let directory: URL
    /// The cluster's own PostgreSQL server, which the run kills too (never the shared one).
    var database: PostgresTestServer?

    func run() async throws -> ChaosReport {
        let started = ContinuousClock.now
        let fleet = try ChaosFleet(
            directory: directory, store: store, collectors: configuration.collectors, agents: configuration.agents, seed: configuration.seed,
            collectorEnvironment: configuration.collectorEnvironment)
        defer { fleet.killAll() }
        for index in fleet.collectors.indices { try await fleet.startCollector(index) }
        for index in fleet.agentPorts.indices { try await fleet.startAgent(index) }

        let oracle = ChaosOracle()
        let traffic = ChaosTraffic(seed: configuration.seed, agentPorts: fleet.agentPorts, oracle: oracle)
        var random = SplitMix64(seed: configuration.seed)
        var faults: [ChaosFault: Int] = [:]
        var cycles = 0
        var opening: [ChaosFault]?
        let writersDeadline = ContinuousClock.now + (configuration.duration ?? .seconds(600)) + .seconds(300)

        try await withThrowingTaskGroup(of: Void.self) { group in
            for writer in 0..<configuration.writers {
                group.addTask { await traffic.write(writer, deadline: writersDeadline) }
            }
            defer { traffic.stopping.store(true, ordering: .relaxed) }
            while cycles < configuration.cycles || configuration.duration.map({ ContinuousClock.now - started < $0 }) ?? false {
                // A random instant: traffic flows meanwhile.
                try await Task.sleep(for: .milliseconds(Int.random(in: 300...1500, using: &random)))
                let fault = pick(cycle: cycles, using: &random, fleet: fleet, opening: &opening)
                try await inject(fault, fleet: fleet, traffic: traffic, random: &random)
                faults[fault, default: 0] += 1
                cycles += 1
                let exits = fleet.unexpectedExits
                if !exits.isEmpty { throw HarnessError(exits.joined(separator: "\n")) }
            }
            // The faults stop; the writers finish what they have in hand (with every agent's clock
            // true again: an agent minutes behind refuses all fresh events, and two of them
            // would leave the writers nowhere to go).
            for index in fleet.agentPorts.indices { try fleet.agentClocks.step(index, toOffsetSeconds: 0) }
            traffic.stopping.store(true, ordering: .relaxed)
            try await group.waitForAll()
        }
        let faultsEnded = ContinuousClock.now

        // Drain: no more faults; connections that lost an ack without dying are cut once, so
        // that nobody waits out the agents' ack timeout.
        for slot in fleet.collectors {
            slot.proxy.heal()
            slot.proxy.cutAll()
        }
        var undrained: [String] = []
        for index in fleet.agentPorts.indices {
            let drained = try await eventually(.seconds(240)) { try await fleet.backlog(index) == 0 }
            if !drained { undrained.append("agent \(index)'s spool did not drain within 240 s:\n\(fleet.logTails)") }
        }
        let drained = ContinuousClock.now
        if drained - faultsEnded > .seconds(30) {
            print("chaos: the drain took \(drained - faultsEnded); the processes' last lines:\n\(fleet.logTails)")
        }

        var proxyTally = ProxyTally()
        for slot in fleet.collectors { proxyTally.add(slot.proxy.tally) }
        let failedCommits = fleet.logged("batch not committed", byCollectors: true)
        let verdict = try await ChaosVerdict.check(fleet: fleet, oracle: oracle, undrained: undrained)
        return ChaosReport(
            store: store.hasPrefix("sqlite:") ? "SQLite" : "PostgreSQL, \(configuration.collectors) collectors", seed: configuration.seed,
            cycles: cycles, faults: faults, possibleFaults: Set(weightedFaults(fleet)), proxy: proxyTally, failedCommits: failedCommits,
            oracle: oracle.counts, verdict: verdict,
            faultTime: faultsEnded - started, drainTime: drained - faultsEnded, wallTime: ContinuousClock.now - started)
    }

    /// The faults the run can inject here, each as often as its weight: PostgreSQL's kill and
    /// read-only ledger need the cluster's own server, the full disks need root (tmpfs) and the
    /// ledger's an SQLite store.
    private func weightedFaults(_ fleet: ChaosFleet) -> [ChaosFault] {
        let faults = ChaosFault.allCases.filter { fault in
            switch fault {
            case .databaseKill, .ledgerReadOnly: database != nil
            case .spoolDiskFull: !fleet.spoolDisks.isEmpty
            case .ledgerDiskFull: fleet.ledgerDisk != nil
            default: true
            }
        }
        return faults.flatMap { Array(repeating: $0, count: configuration.weights[$0] ?? 0) }
    }

    /// The run's fault for `cycle`: the first cycles inject every fault the run can once, in an
    /// order drawn from the seed (so that even the short form meets each one), the rest are
    /// drawn by weight.
    private func pick(cycle: Int, using random: inout SplitMix64, fleet: ChaosFleet, opening: inout [ChaosFault]?) -> ChaosFault {
        let weighted = weightedFaults(fleet)
        if opening == nil {
            var distinct: [ChaosFault] = []
            for fault in weighted where !distinct.contains(fault) { distinct.append(fault) }
            opening = distinct.shuffled(using: &random)
        }
        if let opening, cycle < opening.count { return opening[cycle] }
        return weighted[Int.random(in: 0..<weighted.count, using: &random)]
    }

    /// Injects one fault and, for a fault that lasts, ends it again.
    private func inject(_ fault: ChaosFault, fleet: ChaosFleet, traffic: ChaosTraffic, random: inout SplitMix64) async throws {
        // Proxy faults hit every collector's proxy: the agents may all be on one collector.
        let proxies = fleet.collectors.map(\.proxy)
        switch fault {
        case .agentKill:
            let agent = Int.random(in: 0..<fleet.agentPorts.count, using: &random)
            let downtime = Duration.milliseconds(Int.random(in: 0...800, using: &random))
            await offThePool { fleet.killAgent(agent) }
            try await Task.sleep(for: downtime)
            try await fleet.startAgent(agent)
        case .collectorKill:
            let collector = Int.random(in: 0..<fleet.collectors.count, using: &random)
            let downtime = Duration.milliseconds(Int.random(in: 0...1500, using: &random))
            await offThePool { fleet.killCollector(collector) }
            try await Task.sleep(for: downtime)
            try await fleet.startCollector(collector)
        case .databaseKill:
            guard let database else { return }
            let downtime = Duration.milliseconds(Int.random(in: 0...2000, using: &random))
            await offThePool { database.crash() }
            try await Task.sleep(for: downtime)
            try await offThePool { try database.restart() }
        case .spoolDiskFull:
            let disk = fleet.spoolDisks[Int.random(in: 0..<fleet.spoolDisks.count, using: &random)]
            try await full(disk, for: .milliseconds(Int.random(in: 500...2500, using: &random)))
        case .ledgerDiskFull:
            guard let disk = fleet.ledgerDisk else { return }
            try await full(disk, for: .milliseconds(Int.random(in: 500...2500, using: &random)))
        case .ledgerReadOnly:
            // A primary demoted under the collectors' feet (a failover to a standby): every
            // connection's next transaction is read-only, and writes fail until it is undone.
            guard let database else { return }
            try await offThePool { try database.setReadOnly(true) }
            try await Task.sleep(for: .milliseconds(Int.random(in: 500...3000, using: &random)))
            try await offThePool { try database.setReadOnly(false) }
        case .agentClockSkew:
            // The agent's wall clock steps to a new offset from the true time and stays there
            // (an NTP step, a VM resumed with a stale clock): up to ten minutes either way, or
            // back to zero. Behind by more than the five minutes of allowed future skew, the
            // agent refuses the callers' fresh events as future ones, and they go elsewhere.
            let agent = Int.random(in: 0..<fleet.agentPorts.count, using: &random)
            let offset = Int.random(in: -10...10, using: &random) * 60
            try fleet.agentClocks.step(agent, toOffsetSeconds: offset)
        case .connectionCut:
            for proxy in proxies { proxy.cutAll() }
        case .delay:
            let delay = Duration.milliseconds(Int.random(in: 10...200, using: &random))
            for proxy in proxies { proxy.delay(delay) }
            try await Task.sleep(for: .milliseconds(Int.random(in: 500...2000, using: &random)))
            for proxy in proxies { proxy.delay(nil) }
        case .lostAcks:
            let (count, thenCut) = (Int.random(in: 1...4, using: &random), Bool.random(using: &random))
            for proxy in proxies { proxy.dropAcks(count, thenCut: thenCut) }
        case .duplicateBatches:
            let count = Int.random(in: 1...4, using: &random)
            for proxy in proxies { proxy.duplicateBatches(count) }
        case .reorderedBatches:
            let count = Int.random(in: 1...3, using: &random)
            for proxy in proxies { proxy.reorderBatches(count) }
        case .clientRetry:
            for _ in 0..<Int.random(in: 1...5, using: &random) { await traffic.retry(using: &random) }
        }
    }

    /// `disk` full for `duration`, then space again.
    private func full(_ disk: TmpfsDisk, for duration: Duration) async throws {
        try await offThePool { try disk.fill() }
        try await Task.sleep(for: duration)
        try await offThePool { try disk.free() }
    }
}
