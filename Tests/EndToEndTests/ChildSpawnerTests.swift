import Foundation
import Synchronization
import TallyTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The harness ties every child to the test process with `setpriv --pdeathsig KILL`. The kernel
/// sends that signal when the *thread* that spawned the child exits, so a child spawned from a
/// pooled thread could be killed mid-test (a CI run lost an agent this way). This shows the hazard
/// on this kernel and that ``ChildSpawner`` avoids it.
@Suite struct ChildSpawnerTests {
    @Test func aChildOutlivesTheThreadThatAskedForIt() async throws {
        let direct = sleeper()
        let spawned = sleeper()
        defer {
            for process in [direct, spawned] where process.isRunning { kill(process.processIdentifier, SIGKILL) }
        }
        try startOnShortLivedThread([direct, spawned]) {
            try ChildSpawner.runDirectly(direct)
            try ChildSpawner.run(spawned)
        }
        // The thread has exited: the child it spawned itself dies of SIGKILL…
        #expect(await eventually(.seconds(10)) { !direct.isRunning })
        #expect(direct.terminationReason == .uncaughtSignal && direct.terminationStatus == SIGKILL)
        // …the one it asked the spawner for lives on.
        #expect(spawned.isRunning)
    }
}

extension ChildSpawnerTests {
    /// The spawner counts the open descriptors (it waits while too many are open, because
    /// Foundation's `Process.run` reads past a buffer then): fifty new pipes are a hundred more.
    /// Other tests open and close descriptors meanwhile, so the count is only bounded from below.
    @Test func theOpenDescriptorCountSeesNewDescriptors() throws {
        var pipes: [[Int32]] = []
        defer { for descriptor in pipes.flatMap({ $0 }) { close(descriptor) } }
        for _ in 0..<50 {
            var pair: [Int32] = [-1, -1]
            #expect(pipe(&pair) == 0)
            pipes.append(pair)
        }
        #expect(ChildSpawner.openDescriptorCount() >= 100)
    }

    /// Every child the harness starts is tied, not only the unprivileged ones: a plain command
    /// goes through `setpriv --pdeathsig KILL` and dies with the thread that started it, where
    /// the same command untied lives on (a killed test run once left agents and collectors behind).
    @Test func aPlainCommandIsTiedToItsParent() async throws {
        let tied = plainSleeper()
        ChildSpawner.tie(tied)
        let untied = plainSleeper()
        defer {
            for process in [tied, untied] where process.isRunning { kill(process.processIdentifier, SIGKILL) }
        }
        #expect(tied.executableURL?.path == "/usr/bin/setpriv")
        try startOnShortLivedThread([tied, untied]) {
            try ChildSpawner.runDirectly(tied)
            try ChildSpawner.runDirectly(untied)
        }
        #expect(await eventually(.seconds(10)) { !tied.isRunning })
        #expect(tied.terminationReason == .uncaughtSignal && tied.terminationStatus == SIGKILL)
        #expect(untied.isRunning)
    }
}

/// Runs `start` on a short-lived thread and waits there until every one of `processes` has
/// reached `sleep` (so setpriv has set its signal) before the thread exits.
private func startOnShortLivedThread(_ processes: [Process], _ start: @escaping () throws -> Void) throws {
    var failure: (any Error)?
    runOnShortLivedThread {
        do {
            try start()
            for process in processes {
                let deadline = ContinuousClock.now + .seconds(10)
                while command(of: process.processIdentifier) != "sleep", ContinuousClock.now < deadline {
                    Thread.sleep(forTimeInterval: 0.005)
                }
            }
        } catch {
            failure = error
        }
    }
    if let failure { throw failure }
}

private func plainSleeper() -> Process {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/bin/sleep")
    process.arguments = ["600"]
    process.standardInput = FileHandle.nullDevice
    process.standardOutput = FileHandle.nullDevice
    return process
}

private func sleeper() -> Process {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
    process.arguments = ["--pdeathsig", "KILL", "--", "/bin/sleep", "600"]
    process.standardInput = FileHandle.nullDevice
    process.standardOutput = FileHandle.nullDevice
    return process
}

private func command(of pid: Int32) -> String? {
    (try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
}

/// Runs `body` on a new pthread and returns once that thread has exited (joined).
private func runOnShortLivedThread(_ body: @escaping () -> Void) {
    final class Body {
        let run: () -> Void
        init(_ run: @escaping () -> Void) { self.run = run }
    }
    let context = Unmanaged.passRetained(Body(body)).toOpaque()
    var thread = pthread_t()
    let created = pthread_create(
        &thread, nil,
        { raw in
            if let raw { Unmanaged<Body>.fromOpaque(raw).takeRetainedValue().run() }
            return nil
        }, context)
    precondition(created == 0, "pthread_create failed")
    pthread_join(thread, nil)
}

extension ChildSpawnerTests {
    /// A child's stderr read by ``PipeReader`` (blocking reads on a thread of its own, no
    /// libdispatch read source): every byte arrives, more than a pipe's buffer holds, then the
    /// empty chunk that says the child and its write end are gone.
    @Test func thePipeReaderForwardsEveryByteThenTheEnd() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", "head -c 200000 /dev/zero | tr '\\000' x >&2; printf end >&2"]
        process.standardOutput = FileHandle.nullDevice
        let errors = Pipe()
        process.standardError = errors
        let received = Mutex<(bytes: [UInt8], ended: Bool)>(([], false))
        let ended = DispatchSemaphore(value: 0)
        try ChildSpawner.run(process)
        PipeReader.forward(errors.fileHandleForReading) { data in
            received.withLock { state in
                if data.isEmpty { state.ended = true } else { state.bytes += data }
            }
            if data.isEmpty { ended.signal() }
        }
        #expect(ended.wait(timeout: .now() + 60) == .success)
        process.waitUntilExit()
        let (bytes, end) = received.withLock { ($0.bytes, $0.ended) }
        #expect(end)
        #expect(bytes.count == 200_003)
        #expect(bytes.prefix(200_000).allSatisfy { $0 == UInt8(ascii: "x") })
        #expect(String(decoding: bytes.suffix(3), as: UTF8.self) == "end")
    }
}
