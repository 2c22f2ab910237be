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
