import Foundation
import TallyTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// Runs schemathesis (PyPI: property-based tests of an HTTP API from its OpenAPI document)
/// against a live server, as a child tied to the test process.
///
/// It is found at `.build-tools/venv/bin/schemathesis` under the package root (where
/// `scripts/install-deps.sh` installs it with `TALLY_NEEDS_TOOLS=1`), else on `PATH`.
struct Schemathesis {
    let executable: URL

    /// What one run printed and how it ended.
    struct Outcome {
        let status: Int32
        let output: String
        /// The JUnit report's counts: test cases (one per API operation), failures and errors.
        let report: JUnitCounts?

        /// How many operations the document has, as schemathesis read it
        /// (`Operations: N selected / N total`).
        var documentedOperations: Int? {
            guard let match = output.firstMatch(of: #/Operations:\s+[0-9]+ selected / ([0-9]+) total/#) else { return nil }
            return Int(match.output.1)
        }
    }

    /// The counts on the `<testsuite>` elements of a JUnit report.
    struct JUnitCounts: Equatable {
        var tests = 0
        var failures = 0
        var errors = 0
        var skipped = 0
    }

    /// The schemathesis on this machine, or nil after printing one loud line to stderr when
    /// none is installed and the environment variable `CI` is not `true` or `1`; in CI a
    /// missing schemathesis throws.
    static func locate() throws -> Schemathesis? {
        let environment = ProcessInfo.processInfo.environment
        let ci = environment["CI"]?.lowercased()
        let bundled = BinaryRunner.packageRoot.appendingPathComponent(".build-tools/venv/bin/schemathesis").path
        let onPath = (environment["PATH"] ?? "").split(separator: ":").map { "\($0)/schemathesis" }
        guard let found = try locate(candidates: [bundled] + onPath, inCI: ci == "true" || ci == "1") else {
            let line = "OpenAPI fuzz tests SKIPPED: no schemathesis at \(bundled) nor on PATH — run TALLY_NEEDS_TOOLS=1 scripts/install-deps.sh"
            FileHandle.standardError.write(Data((line + "\n").utf8))
            return nil
        }
        return found
    }

    /// The first executable of `candidates`; when there is none, nil, or (`inCI`) an error.
    static func locate(candidates: [String], inCI: Bool) throws -> Schemathesis? {
        if let found = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) {
            return Schemathesis(executable: URL(fileURLWithPath: found))
        }
        if inCI {
            throw HarnessError(
                "schemathesis is required in CI: none at \(candidates.joined(separator: ", ")) (TALLY_NEEDS_TOOLS=1 scripts/install-deps.sh)")
        }
        return nil
    }

    /// The hooks module: schemathesis has no serializer for NDJSON, which the agent's document
    /// describes as a string of lines; it is sent as it was generated (lone surrogates as the
    /// invalid UTF-8 they make), anything else a negative case made of it as its JSON.
    static let hooksModule = "tally_schemathesis_hooks"
    static let hooks = """
        import json

        import schemathesis


        @schemathesis.serializer("application/x-ndjson", "application/ndjson")
        def ndjson(ctx, value):
            if value is None:
                return None
            if isinstance(value, bytes):
                return value
            if isinstance(value, str):
                return value.encode("utf-8", "surrogatepass")
            return json.dumps(value).encode("utf-8")

        """

    /// Runs `schemathesis run` on `document` against `baseURL` in `directory` (its hooks and
    /// report go there), with `headers` on every request, every phase but the stateful one
    /// (the documents declare no links), at most `maxExamples` generated cases per operation
    /// and the checks named. A run still going after `timeout` is killed (status -1).
    func run(
        document: String, baseURL: String, headers: [String] = [], checks: [String], maxExamples: Int, seed: UInt64,
        directory: URL, timeout: Duration
    ) async throws -> Outcome {
        try Self.hooks.write(to: directory.appendingPathComponent("\(Self.hooksModule).py"), atomically: true, encoding: .utf8)
        let reportPath = directory.appendingPathComponent("junit-\(UUID().uuidString).xml").path
        let outputURL = directory.appendingPathComponent("schemathesis-\(UUID().uuidString).log")
        _ = FileManager.default.createFile(atPath: outputURL.path, contents: nil)
        var arguments = [
            "run", document, "--url", baseURL, "--checks", checks.joined(separator: ","), "--max-examples", String(maxExamples),
            "--phases", "examples,coverage,fuzzing", "--seed", String(seed), "--workers", "1", "--request-timeout", "10",
            "--generation-database", "none", "--report", "junit", "--report-junit-path", reportPath, "--no-color",
        ]
        for header in headers { arguments += ["--header", header] }
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        // schemathesis imports the hooks module from its working directory.
        process.currentDirectoryURL = directory
        var environment = ProcessInfo.processInfo.environment
        environment["NO_COLOR"] = "1"
        environment["SCHEMATHESIS_HOOKS"] = Self.hooksModule
        process.environment = environment
        let output = try FileHandle(forWritingTo: outputURL)
        defer { try? output.close() }
        process.standardOutput = output
        process.standardError = output
        process.standardInput = FileHandle.nullDevice
        try ChildSpawner.run(process)
        let deadline = ContinuousClock.now + timeout
        while process.isRunning && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(100))
        }
        var status: Int32 = -1
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        } else {
            process.waitUntilExit()
            status = process.terminationStatus
        }
        let text = String(decoding: (try? Data(contentsOf: outputURL)) ?? Data(), as: UTF8.self)
        let report = (try? String(contentsOfFile: reportPath, encoding: .utf8)).map { Self.counts(junit: $0) }
        return Outcome(status: status, output: text, report: report)
    }

    /// The counts on the `<testsuite>` elements of a JUnit report, added up.
    static func counts(junit: String) -> JUnitCounts {
        var counts = JUnitCounts()
        for suite in junit.matches(of: #/<testsuite\b[^>]*>/#) {
            let element = String(suite.output)
            counts.tests += attribute("tests", element)
            counts.failures += attribute("failures", element)
            counts.errors += attribute("errors", element)
            counts.skipped += attribute("skipped", element)
        }
        return counts
    }

    private static func attribute(_ name: String, _ element: String) -> Int {
        guard let range = element.range(of: " \(name)=\"") else { return 0 }
        return Int(element[range.upperBound...].prefix { $0.isNumber }) ?? 0
    }
}
