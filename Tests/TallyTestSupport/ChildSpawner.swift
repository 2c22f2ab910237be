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

    /// Held around every `Process.run()` in the test process, so that one spawn at a time looks
    /// at the descriptor table (see ``openDescriptorLimit``). The spawner takes it; a test that
    /// must spawn from its own thread (`ChildSpawnerTests`) calls ``runDirectly(_:)``.
    static let runLock = NSLock()

    /// Foundation's `Process.run` on Linux (swift-corelibs-foundation, `findMaximumOpenFD`) lists
    /// `/proc/self/fd` and copies each entry's whole 256-byte `d_name` out of `readdir`'s buffer.
    /// With more than about 1,360 descriptors open, that 32 KiB buffer is full and the copy of the
    /// last entry reads past its end; when the buffer ends a thread arena's mapped memory, the test
    /// process dies of SIGSEGV in `memcpy` (three clean-clone runs did: the registers held the
    /// 256-byte length and the names "1357", "1358"). The whole suite, run in parallel, peaked
    /// above 3,000 descriptors before the bad-input tables were serialized; a spawn now waits,
    /// for at most a minute, until fewer than this many are open.
    static let openDescriptorLimit = 1_000

    /// `process.run()` on the calling thread, under ``runLock``: for the tests that show why
    /// ``run(_:)`` exists (a child spawned from a thread that then exits).
    public static func runDirectly(_ process: Process) throws {
        runLock.lock()
        defer { runLock.unlock() }
        waitForFewerOpenDescriptors()
        try process.run()
    }

    /// Polls the descriptor count until it is under ``openDescriptorLimit``: the descriptors
    /// belong to other tests running in parallel, which close them when they finish, and nothing
    /// signals that. After a minute the spawn goes ahead and says so on stderr.
    private static func waitForFewerOpenDescriptors() {
        let deadline = ContinuousClock.now + .seconds(60)
        var count = openDescriptorCount()
        while count >= openDescriptorLimit {
            guard ContinuousClock.now < deadline else {
                FileHandle.standardError.write(Data("ChildSpawner: \(count) descriptors open; spawning anyway\n".utf8))
                return
            }
            usleep(20_000)
            count = openDescriptorCount()
        }
    }

    /// The number of entries in `/proc/self/fd`, read without copying `d_name` (the copy is
    /// Foundation's bug above): only the first byte of each name is looked at.
    public static func openDescriptorCount() -> Int {
        guard let directory = opendir("/proc/self/fd") else { return 0 }
        defer { closedir(directory) }
        let nameOffset = MemoryLayout<dirent>.offset(of: \dirent.d_name) ?? 19
        var count = 0
        while let entry = readdir(directory) {
            let first = UnsafeRawPointer(entry).load(fromByteOffset: nameOffset, as: UInt8.self)
            if first != UInt8(ascii: ".") { count += 1 }
        }
        return count
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
