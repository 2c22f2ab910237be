import Foundation
import TallyTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The collector's event loops, which answer the API's reads on the spot, run on the real-time
/// policy (`SCHED_RR`, `realtime_priority`) where the system allows it, so that no thread of a
/// full-speed ingest preempts a read (issue 12); where it does not, the collector says so once
/// at start and keeps the normal policy. Read from the kernel (`/proc/PID/task/*/stat`) of real
/// collector processes, one per case, so that the test process's own event loops are untouched.
@Suite struct RealtimeEventLoopTests {
    /// A collector with `yaml` as its config file, run as the service user with `capabilities`
    /// (root only) or as this process's user; its event loops' policies and its log.
    private func collector(
        config yaml: String = "", unprivileged: Bool, capabilities: [String] = []
    ) async throws -> (loops: [(policy: Int, priority: Int)], log: String) {
        let directory = try ServiceProcess.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("collector.yaml")
        try yaml.write(to: file, atomically: true, encoding: .utf8)
        try Unprivileged.handOver(directory)
        let process = try await ServiceProcess(
            directory: directory, arguments: ["--config", file.path, "--store", "sqlite:\(directory.path)/ledger.db"],
            unprivileged: unprivileged, capabilities: capabilities)
        defer { process.kill() }
        // The policies are set before the listener starts, whose line the process waited for.
        let loops = try Self.eventLoopPolicies(of: process.process.processIdentifier)
        return (loops, process.logText)
    }

    /// (policy, real-time priority) of each of `pid`'s event loop threads (named `NIO-SGLTN-…`
    /// by swift-nio): fields 41 and 40 of each thread's stat line.
    static func eventLoopPolicies(of pid: Int32) throws -> [(policy: Int, priority: Int)] {
        let tasks = "/proc/\(pid)/task"
        var loops: [(policy: Int, priority: Int)] = []
        for tid in try FileManager.default.contentsOfDirectory(atPath: tasks) {
            let name = (try? String(contentsOfFile: "\(tasks)/\(tid)/comm", encoding: .utf8)) ?? ""
            guard name.hasPrefix("NIO-SGLTN-") else { continue }
            let stat = try String(contentsOfFile: "\(tasks)/\(tid)/stat", encoding: .utf8)
            // After the name in parentheses (which may hold spaces) the fields start at the 3rd.
            guard let close = stat.lastIndex(of: ")") else { throw HarnessError("no name in \(stat)") }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            guard fields.count > 38, let priority = Int(fields[40 - 3]), let policy = Int(fields[41 - 3]) else {
                throw HarnessError("a short stat line: \(stat)")
            }
            loops.append((policy, priority))
        }
        guard !loops.isEmpty else { throw HarnessError("no event loop thread in \(tasks)") }
        return loops
    }

    /// The service user, given nothing: the loops keep the normal policy, and the log says why
    /// and what allows it.
    @Test func withoutTheRightTheLoopsKeepTheNormalPolicyAndTheLogSaysSo() async throws {
        guard Unprivileged.isRoot || !realtimePriorityAllowed(1) else { return }  // a user allowed real time
        let (loops, log) = try await collector(unprivileged: true)
        #expect(loops.allSatisfy { $0.policy == Int(SCHED_OTHER) && $0.priority == 0 }, "\(loops)")
        #expect(log.contains("real-time priority 1 was refused"), "\(log)")
        #expect(log.contains("LimitRTPRIO=1"), "\(log)")
    }

    /// The service user given CAP_SYS_NICE (what a unit's `AmbientCapabilities=` grants; the
    /// shipped unit grants `LimitRTPRIO=1` instead, which root here may not raise): every loop
    /// runs on SCHED_RR 1, and the log says so.
    @Test func withTheRightEveryLoopRunsOnTheRealtimePolicy() async throws {
        guard Unprivileged.isRoot else { return }  // only root can grant the capability
        let (loops, log) = try await collector(unprivileged: true, capabilities: ["sys_nice"])
        #expect(loops.allSatisfy { $0.policy == Int(SCHED_RR) && $0.priority == 1 }, "\(loops)")
        #expect(log.contains("the event loops run on the real-time policy (SCHED_RR 1)"), "\(log)")
    }

    /// The priority is the configured one; 0 keeps the normal policy without a word.
    @Test func thePriorityIsTheConfiguredOneAndZeroAsksForNone() async throws {
        guard Unprivileged.isRoot else { return }
        let (raised, _) = try await collector(config: "realtime_priority: 7\n", unprivileged: false)
        #expect(raised.allSatisfy { $0.policy == Int(SCHED_RR) && $0.priority == 7 }, "\(raised)")
        let (normal, log) = try await collector(config: "realtime_priority: 0\n", unprivileged: false)
        #expect(normal.allSatisfy { $0.policy == Int(SCHED_OTHER) }, "\(normal)")
        #expect(!log.contains("real-time"), "\(log)")
    }
}
