import Foundation
import TallyTestSupport
import TallyWorkload
import Testing

/// The built `tallyctl`, found as every end-to-end test finds the binaries (beside the test
/// bundle, so a build with any `--scratch-path` works, else `.build/debug`).
private let tallyctl = BinaryRunner.binDirectory.appendingPathComponent("tallyctl")

private struct Outcome {
    var status: Int32
    var stdout: Data
    var stderr: String
}

/// Runs tallyctl to its end, waiting off the cooperative pool (``offThePool(_:)``).
private func run(_ arguments: [String]) async throws -> Outcome {
    try await offThePool { try runBlocking(arguments) }
}

private func runBlocking(_ arguments: [String]) throws -> Outcome {
    guard FileManager.default.isExecutableFile(atPath: tallyctl.path) else {
        throw RunError("\(tallyctl.path) is missing; run `swift build` first")
    }
    let process = Process()
    process.executableURL = tallyctl
    process.arguments = arguments
    let out = Pipe()
    let err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try ChildSpawner.run(process)
    // Read to the end before waiting, so a full pipe never blocks the child.
    let stdout = out.fileHandleForReading.readDataToEndOfFile()
    let stderr = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return Outcome(status: process.terminationStatus, stdout: stdout, stderr: String(decoding: stderr, as: UTF8.self))
}

private struct RunError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

@Suite("tallyctl gen")
struct GenCommandTests {
    @Test("two runs with the same seed write the same bytes")
    func deterministic() async throws {
        let first = try await run(["gen", "--seed", "1", "--events", "100000"])
        let second = try await run(["gen", "--seed", "1", "--events", "100000"])
        #expect(first.status == 0, "\(first.stderr)")
        #expect(second.status == 0)
        #expect(first.stdout.count > 100_000 * 150)
        #expect(first.stdout.filter { $0 == 0x0A }.count == 100_000)
        #expect(first.stdout == second.stdout)
        let other = try await run(["gen", "--seed", "2", "--events", "1000"])
        #expect(other.status == 0)
        #expect(other.stdout != first.stdout.prefix(other.stdout.count))
    }

    @Test("the bytes equal the library's, and --expect writes the library's totals")
    func matchesLibrary() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("gen-expect-\(getpid()).json").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let outcome = try await run(["gen", "--seed", "4", "--events", "5000", "--start", "2026-06-30T23:59:00Z", "--rate", "10", "--expect", path])
        #expect(outcome.status == 0, "\(outcome.stderr)")
        var workload = try ReferenceWorkload(
            WorkloadConfiguration(seed: 4, events: 5_000, start: try .init(parsing: "2026-06-30T23:59:00Z"), rate: 10))
        var bytes: [UInt8] = []
        while workload.appendNextLine(to: &bytes) != nil {}
        #expect(Array(outcome.stdout) == bytes)
        let totals = try ExpectedTotals.read(from: path)
        #expect(totals == workload.expectedTotals)
        #expect(totals.summary.lines == 5_000)
    }

    @Test(
        "bad flags exit 2 with a one-line reason",
        arguments: [
            ["gen", "--events", "-1"], ["gen", "--rate", "0"], ["gen", "--start", "yesterday"], ["gen", "--seed", "x"],
        ])
    func badUsage(arguments: [String]) async throws {
        let outcome = try await run(arguments)
        #expect(outcome.status == 2)
        #expect(outcome.stdout.isEmpty)
        #expect(outcome.stderr.hasPrefix("tallyctl: "))
        #expect(outcome.stderr.split(separator: "\n").count == 1)
    }
}
