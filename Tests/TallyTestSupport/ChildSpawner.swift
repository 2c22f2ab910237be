import Foundation
import Synchronization

/// Starts child processes from one thread that lives as long as this process.
///
/// A child started through `setpriv --pdeathsig KILL` (how tests and benchmarks tie their
/// children's lives to their own) is killed when the *thread* that spawned it exits, not the
/// process: prctl(2), and measured on this kernel — a `setpriv --pdeathsig KILL sleep 5` spawned
/// from a pthread that is then joined dies of SIGKILL within a second. Foundation's `Process.run`
/// spawns from the calling thread, and the thread a test or a task runs on is a pooled worker
/// that may exit while its child should keep running (a CI run once lost an agent that way: its
/// port refused connections seconds after it had started). Every spawn goes through this one
/// permanent thread instead.
public enum ChildSpawner {
    /// Runs `process` (`Process.run()`) on the spawner thread and returns once it has started,
    /// tied to this process (see ``tie(_:)``).
    public static func run(_ process: Process) throws {
        tie(process)
        let request = SpawnRequest(process)
        spawner.submit(request)
        request.done.wait()
        if let failure = request.failure.withLock({ $0 }) { throw failure }
    }

    private static let spawner = Spawner()

    /// Held around every `Process.run()` in the test process: Foundation's `Process.run` on Linux
    /// is not safe to call from two threads at once (two CI runs crashed in its `memcpy` while
    /// the spawner thread and another thread started children together). The spawner takes it;
    /// a test that must spawn from its own thread (`ChildSpawnerTests`) calls ``runDirectly(_:)``.
    static let runLock = NSLock()

    /// `process.run()` on the calling thread, under ``runLock``: for the tests that show why
    /// ``run(_:)`` exists (a child spawned from a thread that then exits).
    public static func runDirectly(_ process: Process) throws {
        runLock.lock()
        defer { runLock.unlock() }
        try process.run()
    }

    static let setpriv = "/usr/bin/setpriv"

    /// Makes `process` start through `setpriv --pdeathsig KILL`, so the kernel kills it when the
    /// test process dies, even by SIGKILL or a crash. A command that already goes through
    /// `setpriv` (the unprivileged runs, the PostgreSQL server) sets the signal itself.
    public static func tie(_ process: Process) {
        guard let executable = process.executableURL?.path, executable != setpriv else { return }
        process.executableURL = URL(fileURLWithPath: setpriv)
        process.arguments = ["--pdeathsig", "KILL", "--", executable] + (process.arguments ?? [])
    }
}

private final class SpawnRequest: @unchecked Sendable {
    // Unchecked: `process` is touched only by the spawner thread between submit and `done`.
    let process: Process
    let failure = Mutex<(any Error)?>(nil)
    let done = DispatchSemaphore(value: 0)

    init(_ process: Process) { self.process = process }
}

private final class Spawner: Sendable {
    private let queue = Mutex<[SpawnRequest]>([])
    private let waiting = DispatchSemaphore(value: 0)

    init() {
        let thread = Thread { [self] in serve() }
        thread.name = "child-spawner"
        thread.start()
    }

    private func serve() -> Never {
        while true {
            waiting.wait()
            guard let request = queue.withLock({ $0.isEmpty ? nil : $0.removeFirst() }) else { continue }
            do { try ChildSpawner.runDirectly(request.process) } catch { request.failure.withLock { $0 = error } }
            request.done.signal()
        }
    }

    func submit(_ request: SpawnRequest) {
        queue.withLock { $0.append(request) }
        waiting.signal()
    }
}
