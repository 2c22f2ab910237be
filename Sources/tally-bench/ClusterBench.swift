import ArgumentParser
import Foundation
import TallyTestSupport

/// `tally-bench cluster`: Tally on PostgreSQL end to end, measured from outside. A throwaway
/// PostgreSQL with fsync on (durable, as in production) serves three fresh databases in turn:
/// the naive baseline (one `INSERT … ON CONFLICT DO NOTHING` per event from 8 connections),
/// then agents draining spool backlogs (made before any collector runs) into one collector, and
/// into two. Events/s count only events the ledger reconciles as received, deduplicated and
/// committed. Then the month-to-date charges call, with the drained events stored and again
/// with `--query-events` stored.
struct ClusterBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cluster",
        abstract: "PostgreSQL cluster: agents draining into one and two collectors beside naive per-event inserts; charges latency.")
    @Option(help: "The release binaries' directory.") var bin = ".build/release"
    @Option(help: "The working directory (recreated, removed at the end unless --keep).") var data = "./tally-bench-data/cluster"
    @Option(help: "Agents, each draining its own spool backlog.") var agents = 4
    @Option(help: "Reference-workload lines each agent spools before any collector runs.") var events = 250_000
    @Option(help: "Reference-workload lines for the naive baseline.") var naiveEvents = 100_000
    @Option(help: "Concurrent connections of the naive baseline (and of the PostgreSQL floor).") var naiveClients = 8
    @Option(help: "Reference-workload lines for the PostgreSQL floor (raw rows only, 1,000 per statement; 0 skips it).")
    var floorEvents = 400_000
    @Option(help: "Ledger writers per collector (the store address's pool_size).") var poolSize = 4
    @Option(help: "The agents' batch.max_events (the agent's default: 4,000).")
    var agentBatchEvents = 4_000
    @Option(help: "The pricing file of the collectors and the charges query.") var pricing = "deploy/pricing.example.yaml"
    @Option(help: "Events stored for the second charges figure (loaded in-process; 0 skips it).") var queryEvents = 3_000_000
    @Option(help: "Charges calls per latency figure.") var iterations = 1_000
    @Option(help: "The tenant whose month-to-date charges are read.") var tenant = "t0001"
    @Option(
        help:
            "A dashboard polling the tenant's charges on the first collector during each drain, one call every N ms (0: none); timed beside the same calls once the drain is over."
    )
    var drainReadIntervalMs = 10
    @Option(help: "Print the N statements that took most of PostgreSQL's time in each drain (pg_stat_statements; 0: off).")
    var statements = 0
    @Option(
        name: .customLong("postgres-setting"),
        help: "A PostgreSQL server setting (NAME=VALUE), repeatable; added after the bench's own (see deploy/CLUSTER.md).")
    var postgresSettings: [String] = []
    @Flag(help: "Keep the working directory.") var keep = false

    func validate() throws {
        guard agents > 0, events > 0, naiveEvents > 0, floorEvents >= 0, naiveClients > 0, poolSize > 0, queryEvents >= 0, iterations > 0,
            statements >= 0, drainReadIntervalMs >= 0
        else {
            throw ValidationError("counts must be positive (--query-events and --floor-events may be 0)")
        }
    }

    func run() async throws {
        let root = URL(fileURLWithPath: data).standardizedFileURL.path
        try? FileManager.default.removeItem(atPath: root)
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let children = ChildList()
        defer {
            children.killAll()
            if !keep { try? FileManager.default.removeItem(atPath: root) }
        }
        clusterProgress("starting PostgreSQL (fsync on)")
        // Stopped (and its directory removed) at exit; killed with this process otherwise.
        let server = try PostgresTestServer(
            durable: true, settings: (statements > 0 ? ["shared_preload_libraries=pg_stat_statements"] : []) + postgresSettings)
        let run = try ClusterBenchRun(options: self, root: root, server: server, children: children)
        var table = BenchTable.cluster()
        do {
            try await run.measure(into: &table)
        } catch {
            table.print()
            throw error
        }
        table.print()
    }
}

func clusterProgress(_ text: String) { FileHandle.standardError.write(Data("cluster bench: \(text)\n".utf8)) }

/// `value` with one decimal and a multiplication sign: "12.3×".
func times(_ value: Double) -> String { String(format: "%.1f×", value) }
