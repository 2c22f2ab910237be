import Foundation
import TallyTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// Debian's `chromium`, headless, to see the collector's pages as a person's browser renders
/// them: the DOM after loading (`--dump-dom`) and a screenshot. Every run is a child tied to
/// the test process (``ChildSpawner``), with its own profile directory, killed if it has not
/// finished within the timeout.
struct HeadlessChromium {
    let executable: URL

    /// The chromium on this machine (`TALLY_CHROMIUM`, else Debian's `/usr/bin/chromium`), or
    /// nil after one loud line on stderr when none is installed and the environment variable
    /// `CI` is not `true` or `1`; in CI a missing chromium throws.
    static func locate() throws -> HeadlessChromium? {
        var candidates = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        if let chosen = ProcessInfo.processInfo.environment["TALLY_CHROMIUM"] { candidates.insert(chosen, at: 0) }
        if let found = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) {
            return HeadlessChromium(executable: URL(fileURLWithPath: found))
        }
        let line =
            "browser tests SKIPPED: no chromium at \(candidates.joined(separator: " or ")) — install Debian's chromium (TALLY_NEEDS_TOOLS=1 scripts/install-deps.sh)"
        let value = ProcessInfo.processInfo.environment["CI"]?.lowercased()
        if value == "true" || value == "1" { throw HarnessError(line.replacingOccurrences(of: "SKIPPED", with: "cannot run in CI")) }
        FileHandle.standardError.write(Data("\(line)\n".utf8))
        return nil
    }

    /// The page at `url` as the browser's DOM after loading it, serialised.
    func dumpDOM(_ url: String, timeout: Duration = .seconds(90)) async throws -> String {
        let result = try await run(["--dump-dom", url], timeout: timeout)
        guard result.status == 0, !result.stdout.isEmpty else {
            throw HarnessError("chromium --dump-dom \(url) ended with \(result.status): \(result.stderr.suffix(2000))")
        }
        return result.stdout
    }

    /// A PNG of the page at `url` in a `width`×`height` window, written to `file`.
    func screenshot(_ url: String, to file: URL, width: Int = 1280, height: Int = 1600, timeout: Duration = .seconds(90)) async throws {
        try? FileManager.default.removeItem(at: file)
        let result = try await run(["--screenshot=\(file.path)", "--window-size=\(width),\(height)", "--hide-scrollbars", url], timeout: timeout)
        guard result.status == 0, FileManager.default.fileExists(atPath: file.path) else {
            throw HarnessError("chromium --screenshot \(url) ended with \(result.status): \(result.stderr.suffix(2000))")
        }
    }

    private func run(_ arguments: [String], timeout: Duration) async throws -> (status: Int32, stdout: String, stderr: String) {
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("tally-chromium-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: scratch) }
        let outURL = scratch.appendingPathComponent("out")
        let errURL = scratch.appendingPathComponent("err")
        _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
        _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
        let process = Process()
        process.executableURL = executable
        // No sandbox: the tests run as root in CI, where chromium's sandbox refuses to start.
        process.arguments =
            [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
                "--disable-extensions", "--disable-background-networking", "--disable-sync", "--disable-breakpad", "--mute-audio",
                "--user-data-dir=\(scratch.appendingPathComponent("profile").path)",
            ] + arguments
        var environment = ProcessInfo.processInfo.environment
        environment["HOME"] = scratch.path  // nothing of the user's profile is read or written
        process.environment = environment
        let output = try FileHandle(forWritingTo: outURL)
        let errors = try FileHandle(forWritingTo: errURL)
        defer {
            try? output.close()
            try? errors.close()
        }
        process.standardOutput = output
        process.standardError = errors
        process.standardInput = FileHandle.nullDevice
        try ChildSpawner.run(process)
        let deadline = ContinuousClock.now + timeout
        while process.isRunning && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(50))
        }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            throw HarnessError("chromium did not finish within \(timeout): \(arguments)")
        }
        process.waitUntilExit()
        return (
            process.terminationStatus, String(decoding: try Data(contentsOf: outURL), as: UTF8.self),
            String(decoding: try Data(contentsOf: errURL), as: UTF8.self)
        )
    }
}
