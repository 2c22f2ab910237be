import Foundation
import Synchronization
import TallyTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// A release binary run as a child process for `tally-bench agent` and `cluster`: its stderr is
/// kept (the last 32 KiB, for error messages), its memory read from `/proc/PID/status`.
///
/// It dies with the bench: it is started through `setpriv --pdeathsig KILL` (which execs the
/// binary, so the pid is the binary's), through ``ChildSpawner`` — the parent-death signal follows
/// the *thread* that spawned the child, and a pooled thread may exit long before the child should.
final class BenchChild: Sendable {
    let name: String
    let process: Process
    private let log = Locked("")

    static let setpriv = "/usr/bin/setpriv"

    /// Starts `binary` (a path) with `arguments`; stdout is discarded.
    init(_ binary: String, _ arguments: [String]) throws {
        name = (binary as NSString).lastPathComponent
        let process = Process()
        if FileManager.default.isExecutableFile(atPath: Self.setpriv) {
            process.executableURL = URL(fileURLWithPath: Self.setpriv)
            process.arguments = ["--pdeathsig", "KILL", "--", binary] + arguments
        } else {
            process.executableURL = URL(fileURLWithPath: binary)
            process.arguments = arguments
        }
        process.standardOutput = FileHandle.nullDevice
        let errors = Pipe()
        process.standardError = errors
        self.process = process
        let log = self.log
        do {
            try ChildSpawner.run(process)
        } catch {
            throw BenchFailure("cannot start \(process.arguments ?? []): \(error)")
        }
        PipeReader.forward(errors.fileHandleForReading) { data in
            log.withLock { text in
                text += String(decoding: data, as: UTF8.self)
                if text.utf8.count > 65_536 { text = String(text.suffix(32_768)) }
            }
        }
    }

    var pid: Int32 { process.processIdentifier }
    var isRunning: Bool { process.isRunning }
    var logTail: String { log.withLock { String($0.suffix(2_000)) } }

    /// VmRSS and VmHWM now, or nil once the process is gone.
    func memory() -> ProcessMemory? { ProcessMemory.read(pid: pid) }

    /// SIGTERM, then waits for the exit; returns the exit status.
    func stop() async -> Int32 {
        if process.isRunning { kill(pid, SIGTERM) }
        return await waitForExit()
    }

    /// Waits (polling every millisecond) for the process to end by itself.
    func waitForExit() async -> Int32 {
        while process.isRunning { try? await Task.sleep(for: .milliseconds(1)) }
        return process.terminationStatus
    }

    /// SIGKILL without waiting: the cleanup path.
    func killNow() {
        if process.isRunning { kill(pid, SIGKILL) }
    }
}

/// A value behind a lock, shareable between threads (a `Mutex` in a class, so closures can
/// capture it).
final class Locked<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>
    init(_ value: Value) { mutex = Mutex(value) }
    func withLock<Result>(_ body: (inout sending Value) -> sending Result) -> sending Result { mutex.withLock(body) }
    var value: Value { mutex.withLock { $0 } }
}

/// A process's resident memory from `/proc/PID/status`, in kB.
struct ProcessMemory: Sendable {
    var rssKB: Int
    var peakKB: Int

    static func read(pid: Int32) -> ProcessMemory? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        var memory = ProcessMemory(rssKB: 0, peakKB: 0)
        for line in text.split(separator: "\n") {
            if line.hasPrefix("VmRSS:") { memory.rssKB = kilobytes(line) }
            if line.hasPrefix("VmHWM:") { memory.peakKB = kilobytes(line) }
        }
        return memory.rssKB > 0 ? memory : nil
    }

    private static func kilobytes(_ line: Substring) -> Int {
        line.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
    }
}

/// Megabytes (MiB) of a kB figure, one decimal.
func megabytes(_ kilobytes: Int) -> String { String(format: "%.1f", Double(kilobytes) / 1024) }

/// 1234567 as "1,234,567".
func grouped(_ value: Int) -> String {
    let digits = String(value.magnitude)
    var out = ""
    for (index, digit) in digits.enumerated() {
        if index > 0 && (digits.count - index) % 3 == 0 { out.append(",") }
        out.append(digit)
    }
    return value < 0 ? "-" + out : out
}

/// Runs `body(0..<count)` on `count` dedicated threads (blocking socket I/O stays off the
/// cooperative pool) and returns when all have finished.
func onThreads(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) async {
    await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
        let group = DispatchGroup()
        for index in 0..<count {
            group.enter()
            let thread = Thread {
                body(index)
                group.leave()
            }
            thread.start()
        }
        group.notify(queue: .global()) { done.resume() }
    }
}

/// Total size of the regular files under `directory`.
func directoryBytes(_ directory: String) -> Int {
    guard let walker = FileManager.default.enumerator(atPath: directory) else { return 0 }
    var total = 0
    for case let name as String in walker {
        let attributes = try? FileManager.default.attributesOfItem(atPath: directory + "/" + name)
        if attributes?[.type] as? FileAttributeType == .typeRegular { total += (attributes?[.size] as? Int) ?? 0 }
    }
    return total
}
