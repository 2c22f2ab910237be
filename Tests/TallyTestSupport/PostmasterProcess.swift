import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The running `postgres` (postmaster): a child of this process, stopped only by its pid.
///
/// It is spawned from a dedicated thread that lives exactly as long as the server: prctl(2)
/// documents that the parent-death signal is sent when the *thread* that created the child exits,
/// and the thread a test runs on (a pooled worker) may exit long before the run ends. (The kernel
/// here sends it only when the whole process goes, but the one CI runs on need not.)
final class PostmasterProcess: Sendable {
    let pid: Int32
    private let keeper: Keeper

    private init(pid: Int32, keeper: Keeper) {
        self.pid = pid
        self.keeper = keeper
    }

    /// The exit status once the process has exited and been reaped, else nil.
    var exitStatus: Int32? { keeper.state.withLock { $0.exitStatus } }

    static func spawn(executable: URL, arguments: [String], directory: URL, log: URL) throws -> PostmasterProcess {
        guard FileManager.default.createFile(atPath: log.path, contents: nil) else {
            throw PostgresTestServerError.system("cannot create \(log.path)")
        }
        let keeper = Keeper()
        let thread = Thread { keeper.run(executable: executable, arguments: arguments, directory: directory, log: log) }
        thread.name = "postgres-keeper"
        thread.start()
        keeper.started.wait()
        let state = keeper.state.withLock { $0 }
        guard let pid = state.pid else {
            throw PostgresTestServerError.startFailed(reason: state.failure ?? "postgres did not start", logTail: "")
        }
        return PostmasterProcess(pid: pid, keeper: keeper)
    }

    /// Fast shutdown (SIGINT: open connections are closed, which the default SIGTERM would wait
    /// for forever), then SIGKILL if it is still there after 15 s. Returns once it has exited.
    func stop() {
        guard signal(SIGINT) else { return }
        if waitForExit(.seconds(15)) { return }
        guard signal(SIGKILL) else { return }
        _ = waitForExit(.seconds(5))
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

    private var isZombieOrGone: Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return true }
        // "pid (comm) S ...": the state follows the last ')'.
        guard let close = stat.lastIndex(of: ")") else { return false }
        return stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).hasPrefix("Z")
    }

    /// The keeper thread's side: starts the process, reports its pid, then waits for its exit.
    private final class Keeper: Sendable {
        struct State {
            var pid: Int32?
            var failure: String?
            var exitStatus: Int32?
        }

        let state = Mutex(State())
        let started = DispatchSemaphore(value: 0)
        private let exited = DispatchSemaphore(value: 0)

        func run(executable: URL, arguments: [String], directory: URL, log: URL) {
            let process = Process()
            process.executableURL = executable
            process.arguments = arguments
            process.currentDirectoryURL = directory
            process.environment = PostgresTools.environment(adding: [:])
            process.standardInput = FileHandle.nullDevice
            process.terminationHandler = { [self] process in
                let status = process.terminationStatus
                state.withLock { $0.exitStatus = status }
                exited.signal()
            }
            do {
                let output = try FileHandle(forWritingTo: log)
                process.standardOutput = output
                process.standardError = output
                try process.run()
                try? output.close()
                let pid = process.processIdentifier
                state.withLock { $0.pid = pid }
            } catch {
                state.withLock { $0.failure = "cannot start \(executable.path): \(error)" }
            }
            started.signal()
            if state.withLock({ $0.pid != nil }) { exited.wait() }
        }
    }
}
