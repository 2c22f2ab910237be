import Foundation

/// The names of every thread of this process (`/proc/self/task/*/comm`), as `top -H` shows them.
public func threadNamesOfThisProcess() -> [String] {
    let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
    return tasks.compactMap { task in
        try? String(contentsOfFile: "/proc/self/task/\(task)/comm", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
