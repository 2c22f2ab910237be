import Foundation
import Synchronization
import TallyCore
import TallyLedger
import TallyTestSupport
import Testing
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// A cluster: two real collectors on one PostgreSQL database (the run's throwaway server), three
/// real agents listing both. One collector is SIGKILLed mid-stream, restarted, then the other;
/// every event an agent acknowledged is counted exactly once, reconciliation balances per agent,
/// `tallyctl audit --store postgres://…` finds no drift, and both collectors answer the same usage.
@Suite(.serialized) struct ClusterTests {
    @Test func twoCollectorsOneTruthThroughKills() async throws {
        guard let server = try await PostgresTestServer.shared() else { return }
        let url = try server.createDatabase("cluster")
        defer { PostgresTestServer.databaseName(in: url).map { server.dropDatabase($0) } }
        let directory = try ServiceProcess.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        try Unprivileged.handOver(directory)

        let agentPorts = [try freePort(), try freePort()]
        let httpPorts = [try freePort(), try freePort()]
        // The second collector runs as an ordinary user, as a service would.
        func startCollector(_ index: Int) async throws -> ServiceProcess {
            try await ServiceProcess(
                directory: directory,
                arguments: [
                    "--store", url, "--listen", "127.0.0.1:\(agentPorts[index])", "--http", "127.0.0.1:\(httpPorts[index])",
                ], unprivileged: index == 1)
        }
        let fleet = Fleet([try await startCollector(0), try await startCollector(1)])
        defer { for collector in fleet.all { collector.kill() } }

        let pattern = #"address=127\.0\.0\.1:([0-9]+)"#
        var agents: [ServiceProcess] = []
        var spools: [String] = []
        for index in 0..<3 {
            let spool = directory.appendingPathComponent("spool-\(index)").path
            spools.append(spool)
            agents.append(
                try await ServiceProcess(
                    directory: directory,
                    arguments: [
                        "--spool", spool, "--agent-id", "edge-\(index)", "--listen", "127.0.0.1:0",
                        "--collector", "127.0.0.1:\(agentPorts[0])", "--collector", "127.0.0.1:\(agentPorts[1])",
                    ], binary: "tally-agent", readyPattern: pattern))
        }
        defer { for agent in agents { agent.kill() } }

        let base = EventTime.now().advanced(by: .seconds(-120))
        let progress = Progress()
        let sent = Progress()
        // Four writers per agent; the first collector dies after 30 answered requests, comes back
        // after 60, and the second dies after 90.
        let killed = KillSchedule()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (agentIndex, agent) in agents.enumerated() {
                let endpoint = try #require(URL(string: "http://127.0.0.1:\(agent.port)/v1/events"))
                for writer in 0..<4 {
                    group.addTask {
                        for round in 0..<15 {
                            let (data, ids) = AgentCrashTests.body(agentIndex * 100 + writer * 20 + round, base, tenant: "cluster-\(writer % 2)")
                            var request = URLRequest(url: endpoint)
                            request.httpMethod = "POST"
                            request.setValue("application/x-ndjson", forHTTPHeaderField: "Content-Type")
                            sent.acknowledged.withLock { $0 += ids }
                            if let (_, response) = try? await URLSession.shared.upload(for: request, from: data),
                                (response as? HTTPURLResponse)?.statusCode == 200
                            {
                                progress.acknowledged.withLock { $0 += ids }
                            }
                            let count = progress.answered.withLock { value -> Int in
                                value += 1
                                return value
                            }
                            killed.step(count)
                        }
                    }
                }
            }
            // The conductor: kills and restarts at the counts above, in this task.
            group.addTask {
                await killed.wait(for: 30)
                fleet[0].kill()
                #expect(fleet[0].process.terminationReason == .uncaughtSignal)
                await killed.wait(for: 60)
                fleet[0] = try await startCollector(0)
                await killed.wait(for: 90)
                fleet[1].kill()
                #expect(fleet[1].process.terminationReason == .uncaughtSignal)
            }
            try await group.waitForAll()
        }
        fleet[1] = try await startCollector(1)
        for (index, spool) in spools.enumerated() {
            #expect(try await eventually(.seconds(180)) { try await spoolBacklog(spool) == 0 }, "agent \(index) did not drain")
        }
        let acked = Set(progress.acknowledged.withLock { $0 })
        #expect(acked.count >= 150 * 100 / 2, "most requests are answered 200: \(acked.count) events")

        // Both collectors answer the same usage, which counts every acknowledged event once.
        var answers: [String] = []
        for port in httpPorts {
            let usage = try #require(
                URL(string: "http://127.0.0.1:\(port)/v1/usage?tenant=cluster-0&metric=api_calls&granularity=month"))
            let (data, response) = try await URLSession.shared.data(from: usage)
            #expect((response as? HTTPURLResponse)?.statusCode == 200)
            answers.append(String(decoding: data, as: UTF8.self))
        }
        #expect(answers[0] == answers[1])
        for collector in fleet.current { #expect(await collector.stop() == 0) }

        let store = try PostgresLedgerStore(address: PostgresAddress(parsing: url), configuration: LedgerConfiguration())
        defer { store.close() }
        var stored: [String: Int] = [:]
        for tenant in ["cluster-0", "cluster-1"] {
            try store.scanRawEvents(tenant: tenant, period: BillingPeriod(containing: base)) { record in
                stored[record.event.id ?? "", default: 0] += 1
            }
        }
        let missing = acked.filter { stored[$0] == nil }
        #expect(missing.isEmpty, "\(missing.count) acknowledged events are missing, e.g. \(missing.prefix(3))")
        #expect(stored.values.allSatisfy { $0 == 1 }, "an event is stored twice")
        let sentIDs = Set(sent.acknowledged.withLock { $0 })
        #expect(Set(stored.keys).isSubset(of: sentIDs))
        let rows = try store.reconciliation(ReconciliationFilter())
        for agent in ["edge-0", "edge-1", "edge-2"] {
            let counts = rows.filter { $0.agent == agent }.total
            #expect(counts.balances && counts.received > 0, "\(agent): \(counts)")
        }
        #expect(rows.total.accepted == Int64(stored.count))
        let answer = try #require(answers.first.flatMap { try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] })
        let counted = (answer["buckets"] as? [[String: Any]])?.reduce(0) { $0 + (($1["count"] as? Int) ?? 0) }
        #expect(counted == stored.keys.filter { $0.hasPrefix("cluster-0-") }.count, "usage of cluster-0: \(answers[0])")

        let audit = try await BinaryRunner.run("tallyctl", ["audit", "--store", url], unprivileged: true)
        #expect(audit.status == 0, "\(audit.stdoutText)\(audit.stderr)")
        #expect(audit.stdoutText.contains(": 0 drifted"))
    }
}

/// The ledger database goes away under a running collector and comes back: the collector stops
/// acknowledging and says it is not ready, the agent keeps every event on its spool, and once the
/// database is back everything arrives exactly once — with one log line per change of state.
@Suite(.serialized) struct DatabaseOutageTests {
    @Test func theCollectorStopsAckingWhileTheDatabaseIsAwayAndLosesNothing() async throws {
        guard let server = try await PostgresTestServer.shared() else { return }
        let url = try server.createDatabase("outage")
        let name = try #require(PostgresTestServer.databaseName(in: url))
        defer { server.dropDatabase(name) }
        let directory = try ServiceProcess.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let httpPort = try freePort()
        let collector = try await ServiceProcess(directory: directory, arguments: ["--store", url, "--http", "127.0.0.1:\(httpPort)"])
        defer { collector.kill() }
        let spool = directory.appendingPathComponent("spool").path
        let agent = try await ServiceProcess(
            directory: directory,
            arguments: ["--spool", spool, "--agent-id", "outage", "--listen", "127.0.0.1:0", "--collector", "127.0.0.1:\(collector.port)"],
            binary: "tally-agent", readyPattern: #"address=127\.0\.0\.1:([0-9]+)"#)
        defer { agent.kill() }
        let events = try #require(URL(string: "http://127.0.0.1:\(agent.port)/v1/events"))
        let ready = try #require(URL(string: "http://127.0.0.1:\(httpPort)/readyz"))
        let base = EventTime.now().advanced(by: .seconds(-60))
        func post(_ request: Int) async throws -> [String] {
            let (data, ids) = AgentCrashTests.body(request, base, tenant: "outage")
            var post = URLRequest(url: events)
            post.httpMethod = "POST"
            post.setValue("application/x-ndjson", forHTTPHeaderField: "Content-Type")
            let (_, response) = try await URLSession.shared.upload(for: post, from: data)
            #expect((response as? HTTPURLResponse)?.statusCode == 200)
            return ids
        }
        func readiness() async -> Int? {
            guard let (_, response) = try? await URLSession.shared.data(from: ready) else { return nil }
            return (response as? HTTPURLResponse)?.statusCode
        }
        var acked = try await post(1)
        #expect(try await eventually(.seconds(60)) { try await spoolBacklog(spool) == 0 })
        #expect(await readiness() == 200)

        // The database goes away: no new connections, and the collector's are cut.
        _ = try server.psql(
            "ALTER DATABASE \(name) ALLOW_CONNECTIONS false; SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '\(name)'",
            database: "postgres")
        acked += try await post(2)
        acked += try await post(3)
        #expect(await eventually(.seconds(60)) { await readiness() == 503 })
        #expect(try await spoolBacklog(spool) ?? 0 > 0, "the agent keeps what the collector could not store")

        _ = try server.psql("ALTER DATABASE \(name) ALLOW_CONNECTIONS true", database: "postgres")
        #expect(try await eventually(.seconds(120)) { try await spoolBacklog(spool) == 0 })
        #expect(await eventually(.seconds(30)) { await readiness() == 200 })
        #expect(await collector.stop() == 0)
        let log = collector.logText
        #expect(log.components(separatedBy: "the ledger database is unreachable").count - 1 == 1, "one line when it goes: \(log)")
        #expect(log.components(separatedBy: "the ledger database is reachable again").count - 1 == 1, "one line when it is back")
        #expect(!log.contains(server.password), "the password is never logged")

        let store = try PostgresLedgerStore(address: PostgresAddress(parsing: url), configuration: LedgerConfiguration())
        defer { store.close() }
        var stored: [String: Int] = [:]
        try store.scanRawEvents(tenant: "outage", period: BillingPeriod(containing: base)) { stored[$0.event.id ?? "", default: 0] += 1 }
        #expect(Set(stored.keys) == Set(acked) && stored.values.allSatisfy { $0 == 1 })
    }
}

/// The collectors of the test, replaced when one is restarted.
final class Fleet: Sendable {
    private let processes: Mutex<[ServiceProcess]>
    /// Every process ever started (killed at the end whatever happened).
    private let started: Mutex<[ServiceProcess]>

    init(_ processes: [ServiceProcess]) {
        self.processes = Mutex(processes)
        started = Mutex(processes)
    }

    subscript(index: Int) -> ServiceProcess {
        get { processes.withLock { $0[index] } }
        set {
            processes.withLock { $0[index] = newValue }
            started.withLock { $0.append(newValue) }
        }
    }

    /// The current collectors.
    var current: [ServiceProcess] { processes.withLock { $0 } }
    var all: [ServiceProcess] { started.withLock { $0 } }
}

/// Lets the conductor wait until the writers have had `n` requests answered.
final class KillSchedule: Sendable {
    private let answered = AsyncStream<Int>.makeStream()

    func step(_ count: Int) { answered.continuation.yield(count) }

    func wait(for count: Int) async {
        for await value in answered.stream where value >= count { return }
    }
}
