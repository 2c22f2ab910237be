import Foundation
import Testing

@Suite struct CommandLineTests {
    @Test(arguments: [
        ("tally-agent", ["--spool", "--collector", "--agent-id", "--default-metric"]),
        ("tally-collector", ["--store", "--listen", "--agent-key", "--admin-key", "--pricing"]),
        ("tallyctl", ["gen", "spool", "usage", "invoice", "audit", "fingerprint"]),
    ])
    func helpPrintsTheCommandTree(_ binary: String, _ mentions: [String]) async throws {
        // The agent and collector flags live on their default `run` subcommand.
        let arguments = binary == "tallyctl" ? ["--help"] : ["run", "--help"]
        let outcome = try await BinaryRunner.run(binary, arguments)
        #expect(outcome.status == 0)
        for word in mentions { #expect(outcome.stdoutText.contains(word), "\(binary) --help lacks \(word)") }
        let top = try await BinaryRunner.run(binary, ["--help"])
        #expect(top.status == 0)
        #expect(top.stdoutText.contains("USAGE"))
    }

    @Test(arguments: ["tally-agent", "tally-collector", "tallyctl"])
    func versionPrintsAndExitsZero(_ binary: String) async throws {
        let outcome = try await BinaryRunner.run(binary, ["--version"])
        #expect(outcome.status == 0)
        #expect(outcome.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines) == "0.1.0")
    }

    @Test(arguments: [
        ("tally-agent", ["--no-such-flag"]),
        ("tally-agent", ["--listen", "localhost"]),
        ("tally-collector", ["--store", "mysql://x"]),
        ("tally-collector", ["--agent-key", "nosecret"]),
        ("tally-collector", ["--admin-key", ""]),
        ("tally-collector", ["--admin-key", "short-key"]),
        ("tally-collector", ["--agent-key", "edge-1=short"]),
        ("tallyctl", ["frobnicate"]),
        ("tallyctl", ["gen", "--events", "many"]),
    ])
    func badUsageExitsTwoWithOneLine(_ binary: String, _ arguments: [String]) async throws {
        let outcome = try await BinaryRunner.run(binary, arguments)
        #expect(outcome.status == 2)
        let lines = outcome.stderr.split(separator: "\n")
        #expect(lines.count == 1, "stderr: \(outcome.stderr)")
        #expect(outcome.stderr.hasPrefix("\(binary): "))
    }

    @Test func fingerprintCommandMatchesTheVectors() async throws {
        let url = BinaryRunner.packageRoot.appendingPathComponent("protocol/vectors/fingerprint.json")
        let vectors = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [[String: Any]])
        let plain = vectors.filter { $0["default_metric"] is NSNull }
        let input = plain.compactMap { ($0["input"] as? String)?.replacingOccurrences(of: "\n", with: " ") }
            .joined(separator: "\n")
        let outcome = try await BinaryRunner.run("tallyctl", ["fingerprint", "--canonical"], stdin: Data(input.utf8))
        #expect(outcome.status == 0)
        let lines = outcome.stdoutText.split(separator: "\n").map(String.init)
        #expect(lines.count == plain.count)
        for (line, vector) in zip(lines, plain) {
            #expect(line == "\(vector["fingerprint"] as? String ?? "") \(vector["canonical_hex"] as? String ?? "")")
        }
    }
}
