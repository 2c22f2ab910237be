import Foundation
import TallyTestSupport

/// Runs Tally's built binaries (from this package's .build/debug) as real processes.
enum BinaryRunner {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// The folder holding the built executables: beside the test bundle, else .build/debug.
    static let binDirectory: URL = {
        let candidates = [
            Bundle.main.bundleURL,
            Bundle.main.bundleURL.deletingLastPathComponent(),
            packageRoot.appendingPathComponent(".build/debug"),
        ]
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0.appendingPathComponent("tallyctl").path) }
            ?? packageRoot.appendingPathComponent(".build/debug")
    }()

    struct Outcome {
        let status: Int32
        let stdout: Data
        let stderr: String
        var stdoutText: String { String(decoding: stdout, as: UTF8.self) }
    }

    /// Runs `binary` to its end, waiting off the cooperative pool (``offThePool(_:)``); with
    /// `unprivileged`, as an ordinary user (see ``Unprivileged``).
    static func run(
        _ binary: String, _ arguments: [String], stdin: Data? = nil, unprivileged: Bool = false, environment: [String: String] = [:]
    ) async throws -> Outcome {
        try await offThePool { try runBlocking(binary, arguments, stdin: stdin, unprivileged: unprivileged, environment: environment) }
    }

    private static func runBlocking(
        _ binary: String, _ arguments: [String], stdin: Data?, unprivileged: Bool, environment: [String: String]
    ) throws -> Outcome {
        let process = Process()
        if !environment.isEmpty { process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
        if unprivileged {
            let (executable, prefix) = try Unprivileged.command(binary)
            process.executableURL = executable
            process.arguments = prefix + arguments
        } else {
            process.executableURL = binDirectory.appendingPathComponent(binary)
            process.arguments = arguments
        }
        // Output goes to files, so a chatty child can never block on a full pipe.
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("tally-run-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: scratch) }
        let outURL = scratch.appendingPathComponent("out")
        let errURL = scratch.appendingPathComponent("err")
        _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
        _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
        process.standardOutput = try FileHandle(forWritingTo: outURL)
        process.standardError = try FileHandle(forWritingTo: errURL)
        if let stdin {
            let inURL = scratch.appendingPathComponent("in")
            try stdin.write(to: inURL)
            process.standardInput = try FileHandle(forReadingFrom: inURL)
        } else {
            process.standardInput = FileHandle.nullDevice
        }
        try ChildSpawner.run(process)
        process.waitUntilExit()
        return Outcome(
            status: process.terminationStatus, stdout: try Data(contentsOf: outURL),
            stderr: String(decoding: try Data(contentsOf: errURL), as: UTF8.self))
    }

    /// Runs a system tool (not one of Tally's binaries) to its end. It blocks: for tools that
    /// take long, call it through ``offThePool(_:)``.
    static func runSystem(_ path: String, _ arguments: [String]) throws -> Outcome {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        process.standardInput = FileHandle.nullDevice
        try ChildSpawner.run(process)
        let stderr = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Outcome(status: process.terminationStatus, stdout: Data(), stderr: String(decoding: stderr, as: UTF8.self))
    }
}
