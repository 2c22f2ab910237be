import Foundation
import TallyTestSupport
import Testing

/// Chaos: real agents and a real collector under random faults — SIGKILLs and restarts, a proxy
/// that cuts connections mid-frame, delays, duplicates and reorders batches and drops acks, and
/// client retries through the same and another agent — then a drain, and the oracle's truth
/// (what the agents acknowledged to their callers) against usage, invoices, the raw ledger,
/// reconciliation and `tallyctl audit` (``ChaosVerdict``).
///
/// The short form (24 fault cycles) runs in every `make test`; `make chaos DURATION=600 SEED=42`
/// runs the long form (`TALLY_CHAOS_DURATION` seconds of faults, `TALLY_CHAOS_SEED`). Each run
/// prints its table; the seed replays the fault schedule.
@Suite(.serialized) struct ChaosTests {
    @Test func everyAcknowledgedEventIsBilledExactlyOnceThroughFaultsOnSQLite() async throws {
        let report = try await Self.run(ChaosConfiguration.fromEnvironment())
        #expect(report.cycles >= 20)
        Self.expectEveryFault(report, including: [.agentKill, .collectorKill, .connectionCut, .lostAcks, .clientRetry, .agentClockSkew])
        #expect(report.verdict.eventsAcknowledged >= 1_000, "the workload hardly ran:\n\(report.table)")
        #expect(report.discrepancies == 0, "\(report.table)")
    }

    /// The suite can fail: a collector that acks each batch before committing it (the test-only
    /// switch `TALLY_FAULT=ack-before-commit`) loses the batches it was committing when it is
    /// killed, and the same checks must report them.
    @Test func aCollectorThatAcksBeforeCommittingIsCaught() async throws {
        var configuration = ChaosConfiguration.fromEnvironment()
        configuration.duration = nil
        configuration.collectorEnvironment = ["TALLY_FAULT": "ack-before-commit"]
        // The short form's faults, with what loses early-acked batches made far more likely:
        // collector kills, and a full ledger disk (every commit that fails after its ack loses
        // the batch; a kill alone must land in the few milliseconds between ack and commit, and
        // a CI run once had none that did).
        configuration.weights[.collectorKill, default: 0] *= 3
        configuration.weights[.ledgerDiskFull, default: 0] *= 4
        let report = try await Self.run(configuration)
        #expect(report.discrepancies > 0, "the broken collector went unnoticed:\n\(report.table)")
        #expect(
            report.verdict.discrepancies.contains { $0.kind == "acknowledged events missing from the ledger" },
            "\(report.table)")
    }

    /// The same on the cluster: two collectors sharing one PostgreSQL database, agents listing
    /// both, and PostgreSQL itself killed (all its processes, SIGKILL) and restarted too.
    @Test func everyAcknowledgedEventIsBilledExactlyOnceThroughFaultsOnACluster() async throws {
        // A server of its own, since the run kills it. Durable commits (a killed server must
        // not lose what it acknowledged); no fsync, as only processes die here, not the machine.
        let server: PostgresTestServer
        do {
            server = try PostgresTestServer(durable: true, settings: ["fsync=off", "full_page_writes=off", "dynamic_shared_memory_type=mmap"])
        } catch PostgresTestServerError.binariesMissing where ProcessInfo.processInfo.environment["CI"] == nil {
            print("chaos on a cluster SKIPPED: no PostgreSQL binaries")
            return
        }
        defer { server.stop() }
        var configuration = ChaosConfiguration.fromEnvironment()
        configuration.collectors = 2
        let report = try await Self.run(configuration, store: try server.createDatabase("chaos"), database: server)
        #expect(report.cycles >= 20)
        Self.expectEveryFault(report, including: [.collectorKill, .databaseKill, .ledgerReadOnly, .agentClockSkew])
        #expect(report.verdict.eventsAcknowledged >= 1_000, "the workload hardly ran:\n\(report.table)")
        #expect(report.discrepancies == 0, "\(report.table)")
    }

    /// Every fault the run could inject was injected, and those it must be able to inject (in CI,
    /// where the tests run as root, as the full disks need) were among them.
    static func expectEveryFault(_ report: ChaosReport, including required: Set<ChaosFault>) {
        let injected = Set(report.faults.filter { $0.value > 0 }.keys)
        #expect(injected == report.possibleFaults, "\(report.table)")
        if ProcessInfo.processInfo.environment["CI"] != nil {
            let missing = required.subtracting(injected).map(\.rawValue).sorted()
            #expect(missing.isEmpty, "faults never injected: \(missing)")
        }
    }

    static func run(_ configuration: ChaosConfiguration, store: String? = nil, database: PostgresTestServer? = nil) async throws -> ChaosReport {
        let directory = try ServiceProcess.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        print("chaos: seed \(configuration.seed) (TALLY_CHAOS_SEED=\(configuration.seed) replays the fault schedule)")
        let run = ChaosRun(
            configuration: configuration, store: store ?? "sqlite:\(directory.path)/ledger/ledger.db", directory: directory, database: database)
        let report = try await run.run()
        print(report.table)
        return report
    }
}
