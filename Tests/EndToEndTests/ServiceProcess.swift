import Foundation
import TallyTestSupport
import Synchronization

/// A real `tally-collector` or `tally-agent` process on a loopback port chosen by the kernel, with its stderr
/// captured so the test can learn the bound port and read the log.
final class ServiceProcess: Sendable {
    let process: Process
    let directory: URL
    let port: Int
    private let log: LogCapture

    /// Starts the collector with `arguments` (plus `--listen 127.0.0.1:0 --http 127.0.0.1:0`
    /// unless given) and waits, up to 60 s, for its "listening for agents" line.
    /// With `unprivileged`, the process runs as an ordinary user (see ``Unprivileged``), with
    /// `capabilities` granted when the tests run as root.
    init(
        directory: URL, arguments: [String], environment: [String: String] = [:], binary: String = "tally-collector",
        readyPattern: String = #"listening for agents on [0-9.]+:([0-9]+)"#, unprivileged: Bool = false,
        capabilities: [String] = []
    ) async throws {
        self.directory = directory
        let process = Process()
        var args = arguments
        if !args.contains("--listen") { args += ["--listen", "127.0.0.1:0"] }
        if binary == "tally-collector", !args.contains("--http") { args += ["--http", "127.0.0.1:0"] }
        if unprivileged {
            let (executable, prefix) = try Unprivileged.command(binary, capabilities: capabilities)
            process.executableURL = executable
            args = prefix + args
        } else {
            process.executableURL = BinaryRunner.binDirectory.appendingPathComponent(binary)
        }
        process.arguments = args
        process.currentDirectoryURL = directory
        var env = ProcessInfo.processInfo.environment
        for (key, value) in environment { env[key] = value }
        process.environment = env
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        let log = LogCapture(pattern: readyPattern)
        try ChildSpawner.run(process)
        PipeReader.forward(errors.fileHandleForReading) { data in log.append(data) }
        self.process = process
        self.log = log
        // A debug binary on a loaded machine can take seconds to listen: wait off the pool.
        guard let port = await offThePool({ log.waitForPort(deadline: .now() + 60) }) else {
            process.terminate()
            throw HarnessError("\(binary) did not start: \(log.text)")
        }
        self.port = port
    }

    var logText: String { log.text }

    /// SIGTERM and wait (off the pool: a graceful shutdown can take seconds).
    func stop() async -> Int32 {
        if process.isRunning { process.terminate() }
        return await offThePool { [process] in
            process.waitUntilExit()
            return process.terminationStatus
        }
    }

    /// SIGKILL and wait.
    func kill() {
        if process.isRunning { Foundation.kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    /// Waits for the process to end by itself.
    func waitForExit() async -> (status: Int32, reason: Process.TerminationReason) {
        await offThePool { [process] in
            process.waitUntilExit()
            return (process.terminationStatus, process.terminationReason)
        }
    }

    static func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("tally-e2e-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }
}

/// Collects a child's stderr and signals when the listening line appears.
final class LogCapture: Sendable {
    private let pattern: String
    init(pattern: String) { self.pattern = pattern }
    private let state = Mutex<(text: String, port: Int?)>(("", nil))
    private let arrived = DispatchSemaphore(value: 0)

    func append(_ data: Data) {
        let portFound: Bool = state.withLock { state in
            state.text += String(decoding: data, as: UTF8.self)
            guard state.port == nil,
                let regex = try? NSRegularExpression(pattern: pattern),
                let match = regex.firstMatch(in: state.text, range: NSRange(state.text.startIndex..., in: state.text)),
                let range = Range(match.range(at: 1), in: state.text)
            else { return data.isEmpty }
            state.port = Int(state.text[range])
            return true
        }
        if portFound { arrived.signal() }
    }

    var text: String { state.withLock { $0.text } }

    func waitForPort(deadline: DispatchTime) -> Int? {
        _ = arrived.wait(timeout: deadline)
        return state.withLock { $0.port }
    }
}

struct HarnessError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
