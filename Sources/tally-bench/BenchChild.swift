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

    /// Where a process's resident memory is (`/proc/PID/smaps`), in kB: the code of its own binary
    /// (the executable mapping; what scripts/agent.order packs), the rest of its binary (read-only
    /// metadata, relocated and written data), shared libraries, and anonymous memory (heap,
    /// stacks).
    struct Breakdown: Sendable {
        var code = 0
        var data = 0
        var libraries = 0
        var anonymous = 0
    }

    static func breakdown(pid: Int32) -> Breakdown? {
        // Read to the end with stdio: a procfs file says its size is 0, and Foundation's whole-file
        // read stops short of a long one.
        guard let binary = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/exe"),
            let file = fopen("/proc/\(pid)/smaps", "r")
        else { return nil }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = chunk.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, file) }
            if count <= 0 { break }
            bytes += chunk[0..<count]
        }
        let text = String(decoding: bytes, as: UTF8.self)
        var result = Breakdown()
        var path = ""
        var executable = false
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard let first = fields.first else { continue }
            if first.contains("-"), fields.count >= 5, first.first?.isHexDigit == true {
                // A mapping's header: range, permissions, offset, device, inode, [path].
                executable = fields[1].contains("x")
                path = fields.count >= 6 ? fields[5...].joined(separator: " ") : ""
            } else if first == "Rss:", fields.count >= 2, let kB = Int(fields[1]) {
                if path == binary {
                    if executable { result.code += kB } else { result.data += kB }
                } else if path.hasPrefix("/") {
                    result.libraries += kB
                } else {
                    result.anonymous += kB
                }
            }
        }
        return result
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
