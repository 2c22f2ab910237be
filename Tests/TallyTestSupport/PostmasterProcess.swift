import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The running `postgres` (postmaster): a child of this process, stopped only by its pid.
/// It is spawned through ``ChildSpawner``, so its parent-death signal follows this process, not
/// the pooled thread that asked for it.
final class PostmasterProcess: Sendable {
    let pid: Int32
    private let exit: ExitStatus

    private init(pid: Int32, exit: ExitStatus) {
        self.pid = pid
        self.exit = exit
    }

    /// The exit status once the process has exited and been reaped, else nil.
    var exitStatus: Int32? { exit.status.withLock { $0 } }

    static func spawn(executable: URL, arguments: [String], directory: URL, log: URL) throws -> PostmasterProcess {
        guard FileManager.default.createFile(atPath: log.path, contents: nil) else {
            throw PostgresTestServerError.system("cannot create \(log.path)")
        }
        let exit = ExitStatus()
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        process.currentDirectoryURL = directory
        process.environment = PostgresTools.environment(adding: [:])
        process.standardInput = FileHandle.nullDevice
        process.terminationHandler = { process in exit.status.withLock { $0 = process.terminationStatus } }
        let output = try FileHandle(forWritingTo: log)
        process.standardOutput = output
        process.standardError = output
        defer { try? output.close() }
        do {
            try ChildSpawner.run(process)
        } catch {
            throw PostgresTestServerError.startFailed(reason: "cannot start \(executable.path): \(error)", logTail: "")
        }
        return PostmasterProcess(pid: process.processIdentifier, exit: exit)
    }

    /// Fast shutdown (SIGINT: open connections are closed, which the default SIGTERM would wait
    /// for forever), then SIGKILL if it is still there after 15 s. Returns once it has exited.
    func stop() {
        guard signal(SIGINT) else { return }
        if waitForExit(.seconds(15)) { return }
        guard signal(SIGKILL) else { return }
        _ = waitForExit(.seconds(5))
    }

    /// A crash: SIGSTOP (so it starts no process meanwhile), then SIGKILL to it and to every
    /// process it had started (backends, WAL writer, checkpointer...). Returns once all are gone.
    func killWithChildren() {
        guard signal(SIGSTOP) else { return }
        let children = Self.children(of: pid)
        _ = signal(SIGKILL)
        for child in children { kill(child, SIGKILL) }
        _ = waitForExit(.seconds(15))
        let deadline = ContinuousClock.now + .seconds(15)
        while children.contains(where: { !Self.isZombieOrGone($0) }), ContinuousClock.now < deadline {
            Thread.sleep(forTimeInterval: 0.02)
        }
    }

    /// The pids whose parent is `parent` (from /proc/PID/stat).
    private static func children(of parent: Int32) -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap { Int32($0) }.filter { pid in
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else {
                return false
            }
            // "pid (comm) S ppid ...": the parent is the second field after the last ')'.
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            return fields.count > 1 && Int32(fields[1]) == parent
        }
    }

    /// Sends `signal` unless the process has already exited; false if it has.
    private func signal(_ signal: Int32) -> Bool {
        // Until the termination handler has run the child is at worst an unreaped zombie, so
        // its pid still names it.
        guard exitStatus == nil else { return false }
        return kill(pid, signal) == 0
    }

    /// Polls, with a deadline, until the process has exited (reaped, or a zombie that this
    /// process's Foundation has not reaped yet, e.g. while exiting).
    private func waitForExit(_ timeout: Duration) -> Bool {
        let deadline = ContinuousClock.now + timeout
        repeat {
            if exitStatus != nil || isZombieOrGone { return true }
            Thread.sleep(forTimeInterval: 0.02)
        } while ContinuousClock.now < deadline
        return false
    }

    private var isZombieOrGone: Bool { Self.isZombieOrGone(pid) }

    private static func isZombieOrGone(_ pid: Int32) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return true }
        // "pid (comm) S ...": the state follows the last ')'.
        guard let close = stat.lastIndex(of: ")") else { return false }
        return stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).hasPrefix("Z")
    }
}

/// Where the termination handler leaves the exit status.
private final class ExitStatus: Sendable {
    let status = Mutex<Int32?>(nil)
}
