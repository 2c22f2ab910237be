import Foundation
import Testing
import TallyCore
#if canImport(FoundationNetworking)
import FoundationNetworking
import TallyTestSupport
#endif

/// A finance lead's question, end to end: events sent to a real agent (run as an ordinary
/// user, as the collector), one of them retried; then `tallyctl trace` answers from the
/// collector where the event is billed, and `tallyctl spool inspect --id` from the agent's spool.
@Suite(.serialized) struct TraceCommandTests {
    @Test func traceFollowsAnEventFromTheAgentToItsInvoiceLine() async throws {
        let directory = try ServiceProcess.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let pricing = directory.appendingPathComponent("pricing.yaml").path
        try FileManager.default.copyItem(
            atPath: BinaryRunner.packageRoot.appendingPathComponent("deploy/demo-pricing.yaml").path, toPath: pricing)
        try Unprivileged.handOver(directory)
        let httpPort = try freePort()
        let collector = try await ServiceProcess(
            directory: directory,
            arguments: ["--store", "sqlite:\(directory.path)/ledger.db", "--pricing", pricing, "--http", "127.0.0.1:\(httpPort)"],
            unprivileged: true)
        defer { collector.kill() }
        let spool = directory.appendingPathComponent("spool").path
        let agent = try await ServiceProcess(
            directory: directory,
            arguments: ["--spool", spool, "--collector", "127.0.0.1:\(collector.port)", "--agent-id", "edge-trace"],
            binary: "tally-agent", readyPattern: #"address=127\.0\.0\.1:([0-9]+)"#, unprivileged: true)
        defer { agent.kill() }

        let time = EventTime(microseconds: EventTime.now().microseconds / 1_000_000 * 1_000_000 - 120_000_000)
        let disputed =
            #"{"tenant":"t0001","metric":"api_calls","quantity":7,"timestamp":"\#(time)","id":"req-7f3a","properties":{"endpoint":"/v1/search"}}"#
        let other = #"{"tenant":"t0001","metric":"api_calls","quantity":5,"timestamp":"\#(time)","id":"req-other"}"#
        let url = try #require(URL(string: "http://127.0.0.1:\(agent.port)/v1/events"))
        for body in [disputed + "\n" + other, disputed] {  // the second request is the client's retry
            var request = URLRequest(url: url)
            request.httpMethod = "POST"
            request.setValue("application/x-ndjson", forHTTPHeaderField: "Content-Type")
            let (_, response) = try await URLSession.shared.upload(for: request, from: Data(body.utf8))
            #expect((response as? HTTPURLResponse)?.statusCode == 200)
        }
        let drained = try await eventually(.seconds(60)) { try await spoolBacklog(spool, unprivileged: true) == 0 }
        #expect(drained, "the spool did not drain: \(agent.logText)")

        let collectorHTTP = "127.0.0.1:\(httpPort)"
        let json = try await BinaryRunner.run(
            "tallyctl", ["trace", "--collector-http", collectorHTTP, "--tenant", "t0001", "--id", "req-7f3a", "--json"], unprivileged: true)
        #expect(json.status == 0, "\(json.stderr)")
        let report = try JSONSerialization.jsonObject(with: Data(json.stdoutText.utf8)) as? [String: Any]
        let events = report?["events"] as? [[String: Any]] ?? []
        #expect(events.count == 1, "\(json.stdoutText)")
        let event = events.first ?? [:]
        #expect(event["outcome"] as? String == "accepted" && event["received"] as? Int == 2)
        #expect((event["firstArrival"] as? [String: Any])?["agent"] as? String == "edge-trace")
        let lines = event["invoiceLines"] as? [[String: Any]] ?? []
        #expect(lines.count == 1 && lines.first?["status"] as? String == "draft")
        // The line bills both events' 12 calls.
        #expect(lines.first?["quantity"] as? String == "12", "\(lines)")

        let text = try await BinaryRunner.run("tallyctl", ["trace", "--collector-http", collectorHTTP, "--tenant", "t0001", "--id", "req-7f3a"])
        #expect(text.status == 0)
        #expect(text.stdoutText.contains("outcome: accepted: billed once"), "\(text.stdoutText)")
        #expect(text.stdoutText.contains("received 2×: first from edge-trace"))
        #expect(text.stdoutText.contains("duplicate from edge-trace"))

        let never = try await BinaryRunner.run("tallyctl", ["trace", "--collector-http", collectorHTTP, "--tenant", "t0001", "--id", "req-none"])
        #expect(never.status == 1 && never.stdoutText.contains("never received"), "\(never.stdoutText)\(never.stderr)")
        let usage = try await BinaryRunner.run("tallyctl", ["trace", "--collector-http", collectorHTTP, "--tenant", "t0001"])
        #expect(usage.status == 2 && usage.stderr.contains("--id or --fingerprint"))

        // A correction with a reason: a dry run first, then for real, then the same order again.
        let correct = [
            "correct", "--collector-http", collectorHTTP, "--correction-key", "ticket-9", "--reason", "test traffic", "--tenant", "t0001", "--id",
            "req-other",
            "--void",
        ]
        let dry = try await BinaryRunner.run("tallyctl", correct + ["--dry-run"])
        #expect(dry.status == 0 && dry.stdoutText.hasPrefix("would correct 1 of 1 events"), "\(dry.stdoutText)\(dry.stderr)")
        #expect(dry.stdoutText.contains("api_calls: -5"))
        let applied = try await BinaryRunner.run("tallyctl", correct, unprivileged: true)
        #expect(applied.status == 0 && applied.stdoutText.hasPrefix("corrected 1 of 1 events"), "\(applied.stdoutText)\(applied.stderr)")
        let again = try await BinaryRunner.run("tallyctl", correct)
        #expect(again.status == 0 && again.stdoutText.hasPrefix("corrected 0 of 1 events") && again.stdoutText.contains("(already applied)"))
        let afterLines = try await BinaryRunner.run(
            "tallyctl", ["trace", "--collector-http", collectorHTTP, "--tenant", "t0001", "--id", "req-7f3a", "--json"])
        let afterReport = try JSONSerialization.jsonObject(with: Data(afterLines.stdoutText.utf8)) as? [String: Any]
        let afterEvent = (afterReport?["events"] as? [[String: Any]])?.first
        #expect(((afterEvent?["invoiceLines"] as? [[String: Any]])?.first?["quantity"] as? String) == "7", "the voided 5 left the line")
        let bad = try await BinaryRunner.run(
            "tallyctl", ["correct", "--collector-http", collectorHTTP, "--correction-key", "k", "--reason", "r", "--tenant", "t0001"])
        #expect(bad.status == 2)

        // The agent's side: both copies are in its spool, acknowledged, with the fingerprint the
        // collector reported.
        let inspect = try await BinaryRunner.run("tallyctl", ["spool", "inspect", "--spool", spool, "--id", "req-7f3a"], unprivileged: true)
        #expect(inspect.status == 0, "\(inspect.stderr)")
        let copies = inspect.stdoutText.split(separator: "\n")
        #expect(copies.count == 2, "\(inspect.stdoutText)")
        let fingerprint = event["fingerprint"] as? String ?? "?"
        #expect(copies.allSatisfy { $0.contains("\"acknowledged\":true") && $0.contains("\"fingerprint\":\"\(fingerprint)\"") })
        // Each copy names the batch that shipped it: the batches the collector's trace names for
        // the first arrival and the duplicate, both from this agent.
        let spoolBatches = copies.compactMap { line -> Int? in
            (try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])?["batch"] as? Int
        }
        let arrivals = [event["firstArrival"] as? [String: Any]] + ((event["duplicates"] as? [[String: Any]]) ?? []).map { Optional($0) }
        let collectorBatches = arrivals.compactMap { $0?["batch"] as? Int }
        #expect(spoolBatches.count == 2 && Set(spoolBatches) == Set(collectorBatches), "\(inspect.stdoutText) \(arrivals)")
    }
}
