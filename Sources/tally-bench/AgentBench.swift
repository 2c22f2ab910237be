import ArgumentParser
import Foundation
import Synchronization

/// `tally-bench agent`: the real release `tally-agent` (with `tally-collector` and `tallyctl`)
/// as child processes, measured from outside: local ingest rates into the durable spool (default
/// fsync policy, collector not running), resident memory idle and at a paced rate, restart time
/// with a large spool, and the drain of a backlog into a collector on the embedded store.
struct AgentBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agent",
        abstract: "The release agent as a child process: ingest rates, memory, restart with a large spool, backlog drain.")
    @Option(help: "The release binaries' directory.") var bin = ".build/release"
    @Option(help: "The working directory (recreated, removed at the end unless --keep).") var data = "./tally-bench-data/agent"
    @Option(help: "Lines for the Unix-socket stream figure.") var streamEvents = 2_000_000
    @Option(help: "Unix-socket connections streaming at once.") var streamConnections = 4
    @Option(help: "Lines for the HTTP figure (bodies of 100).") var httpEvents = 1_000_000
    @Option(help: "Concurrent keep-alive HTTP connections, comma-separated: one figure each.") var httpConnections = "8,64"
    @Option(help: "The paced rate for the memory figure, events/s.") var pacedRate = 50_000
    @Option(help: "How long the paced run lasts, seconds.") var pacedSeconds = 10
    @Option(help: "Events in the spool backlog the agent drains into a collector.") var backlog = 10_000_000
    @Option(help: "Fill the spool to at least this many MiB before the restart figure.") var restartSpoolMb = 1024
    @Option(help: "Events for `tallyctl spool drain` of a stopped agent's spool (0 skips it).") var ctlDrainEvents = 1_000_000
    @Option(help: "The collector's pricing file during the drain (for the charges reads).") var pricing = "deploy/pricing.example.yaml"
    @Option(help: "The tenant whose month-to-date charges are polled during and after the drain.") var tenant = "t0001"
    @Option(help: "Microseconds between two charges calls (one connection) during and after the drain (0: no reads).") var readIntervalUs = 5_000
    @Option(help: "The agent's spool fsync setting (always, never or an interval such as 5ms; default: the agent's own).")
    var agentFsync: String?
    @Option(help: "The agent's batch.max_events (default: the agent's own).") var agentBatchEvents: Int?
    @Flag(help: "Keep the working directory.") var keep = false

    func validate() throws {
        guard streamEvents > 0, httpEvents >= 100, pacedRate >= 100, pacedSeconds > 0, backlog > 0, restartSpoolMb >= 0, ctlDrainEvents >= 0,
            streamConnections > 0, !connectionCounts.isEmpty
        else { throw ValidationError("sizes must be positive (--http-events at least 100, --paced-rate at least 100)") }
    }

    var connectionCounts: [Int] { httpConnections.split(separator: ",").compactMap { Int($0) }.filter { $0 > 0 } }

    func run() async throws {
        let root = URL(fileURLWithPath: data).standardizedFileURL.path
        try? FileManager.default.removeItem(atPath: root)
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let children = ChildList()
        defer {
            children.killAll()
            if !keep { try? FileManager.default.removeItem(atPath: root) }
        }
        let bench = try AgentBenchRun(bin: bin, root: root, children: children, fsync: agentFsync, batchEvents: agentBatchEvents)
        var table = BenchTable.figures()
        do {
            try await bench.measure(self, into: &table)
        } catch {
            table.print()
            throw error
        }
        table.print()
    }
}

/// The children started so far, killed on the way out whatever happened.
final class ChildList: Sendable {
    private let children = Locked<[BenchChild]>([])
    func add(_ child: BenchChild) { children.withLock { $0.append(child) } }
    func killAll() { for child in children.value { child.killNow() } }
}

func progress(_ text: String) { FileHandle.standardError.write(Data("agent bench: \(text)\n".utf8)) }

func rate(_ events: Int, _ elapsed: Duration) -> String {
    elapsed > .zero ? grouped(Int(Double(events) / elapsed.seconds)) : "-"
}
