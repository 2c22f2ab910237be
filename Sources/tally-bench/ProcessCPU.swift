import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// CPU time (user + system) of processes from `/proc/PID/stat`: where a run's time went.
enum ProcessCPU {
    static let ticksPerSecond = Double(max(1, sysconf(Int32(_SC_CLK_TCK))))

    /// The fields after the command name: index 0 is field 3 (state) of proc(5).
    private static func fields(pid: Int32) -> [Substring]? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return nil }
        return stat[stat.index(after: close)...].split(separator: " ")
    }

    private static func ticks(_ fields: [Substring], _ field: Int) -> Double { fields.count > field - 3 ? Double(fields[field - 3]) ?? 0 : 0 }

    /// utime + stime of one process, seconds (0 once it is gone).
    static func seconds(pid: Int32) -> Double {
        guard let fields = fields(pid: pid) else { return 0 }
        return (ticks(fields, 14) + ticks(fields, 15)) / ticksPerSecond
    }

    /// A server and its children: its own time, its reaped children's (cutime, cstime) and its
    /// live children's — PostgreSQL's postmaster and its backends.
    static func secondsWithChildren(pid: Int32) -> Double {
        guard let own = fields(pid: pid) else { return 0 }
        var total = ticks(own, 14) + ticks(own, 15) + ticks(own, 16) + ticks(own, 17)
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        for entry in entries {
            guard let child = Int32(entry), child != pid, let fields = fields(pid: child), fields.count > 1, Int32(fields[1]) == pid else {
                continue
            }
            total += ticks(fields, 14) + ticks(fields, 15)
        }
        return total / ticksPerSecond
    }
}

/// Where one thread's wall time went, from `/proc/PID/task/TID/schedstat` (nanoseconds on a
/// core, waiting on a run queue, timeslices): for the drain, the ledger writer's — the thread
/// the end-to-end rate waits on — as running, waiting for a core (runnable) and blocked (its
/// fsyncs, or no batch to commit).
struct ThreadSchedule {
    var running: UInt64 = 0
    var waiting: UInt64 = 0

    /// Every thread of `pid` by thread id, with its name.
    static func threads(pid: Int32) -> [Int32: (name: String, schedule: ThreadSchedule)] {
        let tasks = "/proc/\(pid)/task"
        var result: [Int32: (name: String, schedule: ThreadSchedule)] = [:]
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: tasks)) ?? [] {
            guard let tid = Int32(entry),
                let stat = try? String(contentsOfFile: "\(tasks)/\(entry)/schedstat", encoding: .utf8),
                let name = try? String(contentsOfFile: "\(tasks)/\(entry)/comm", encoding: .utf8)
            else { continue }
            let fields = stat.split(separator: " ").compactMap { UInt64($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
            guard fields.count >= 2 else { continue }
            result[tid] = (name.trimmingCharacters(in: .whitespacesAndNewlines), ThreadSchedule(running: fields[0], waiting: fields[1]))
        }
        return result
    }

    /// Nanoseconds on a core between two snapshots, summed per thread name (the later name).
    static func runningByName(
        from before: [Int32: (name: String, schedule: ThreadSchedule)], to after: [Int32: (name: String, schedule: ThreadSchedule)]
    ) -> [String: UInt64] {
        var result: [String: UInt64] = [:]
        for (tid, thread) in after {
            result[thread.name, default: 0] += thread.schedule.running &- (before[tid]?.schedule.running ?? 0)
        }
        return result
    }

    /// The thread named `prefix…` that ran longest between two snapshots, and its schedule
    /// over that span.
    static func busiest(
        prefix: String, from before: [Int32: (name: String, schedule: ThreadSchedule)],
        to after: [Int32: (name: String, schedule: ThreadSchedule)]
    ) -> ThreadSchedule? {
        var best: ThreadSchedule?
        for (tid, thread) in after where thread.name.hasPrefix(prefix) {
            let start = before[tid]?.schedule ?? ThreadSchedule()
            let span = ThreadSchedule(
                running: thread.schedule.running &- start.running, waiting: thread.schedule.waiting &- start.waiting)
            if span.running > best?.running ?? 0 { best = span }
        }
        return best
    }

    /// "running / runnable / blocked" as percentages of `wall`.
    func split(over wall: Duration) -> String {
        let total = max(1, Double(wall.components.seconds) * 1e9 + Double(wall.components.attoseconds) / 1e9)
        let run = Double(running) / total * 100
        let wait = Double(waiting) / total * 100
        return String(format: "%.0f%% / %.0f%% / %.0f%%", run, wait, max(0, 100 - run - wait))
    }
}
