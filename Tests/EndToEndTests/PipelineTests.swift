import Foundation
import Testing
import TallyCore
import TallyWorkload
#if canImport(FoundationNetworking)
import FoundationNetworking
import TallyTestSupport
#endif

/// The reference workload through a real agent and a real collector: every tenant's invoice must
/// equal the generator's expected totals, to the cent. The collector, the agent and `tallyctl`
/// run as an ordinary user (`nobody` when the tests run as root), as a service is deployed.
@Suite(.serialized) struct PipelineTests {
    @Test func referenceWorkloadIsBilledExactlyAsGeneratedByUnprivilegedProcesses() async throws {
        let directory = try ServiceProcess.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let pricing = directory.appendingPathComponent("pricing.yaml").path
        try FileManager.default.copyItem(
            atPath: BinaryRunner.packageRoot.appendingPathComponent("deploy/demo-pricing.yaml").path, toPath: pricing)
        try Unprivileged.handOver(directory)
        let ledger = "sqlite:\(directory.path)/ledger.db"
        let collector = try await ServiceProcess(directory: directory, arguments: ["--store", ledger, "--pricing", pricing], unprivileged: true)
        defer { collector.kill() }
        let spool = directory.appendingPathComponent("spool").path
        let agent = try await ServiceProcess(
            directory: directory,
            arguments: [
                "--spool", spool, "--collector", "127.0.0.1:\(collector.port)", "--agent-id", "e2e", "--default-metric", "api_calls",
            ],
            binary: "tally-agent", readyPattern: #"address=127\.0\.0\.1:([0-9]+)"#, unprivileged: true)
        defer { agent.kill() }

        // A plain TCP connection that sends nothing, to each listener: as an ordinary user this
        // once made both processes exit (a socket option that needs CAP_NET_ADMIN).
        try RawConnection.touch(port: collector.port)
        try RawConnection.touch(port: agent.port)

        // 20,000 lines ending a minute ago: retries, late and invalid events included.
        let configuration = WorkloadConfiguration(
            seed: 7, events: 20_000, start: EventTime.now().advanced(by: .seconds(-(20_000 / 20) - 60)), rate: 20)
        var workload = try ReferenceWorkload(configuration)
        var body: [UInt8] = []
        var lines = 0
        var chunks: [[UInt8]] = []
        while workload.appendNextLine(to: &body) != nil {
            body.append(0x0A)
            lines += 1
            if lines % 4000 == 0 {
                chunks.append(body)
                body = []
            }
        }
        if !body.isEmpty { chunks.append(body) }
        let expectFile = directory.appendingPathComponent("expected.json").path
        try workload.expectedTotals.write(to: expectFile)

        let url = try #require(URL(string: "http://127.0.0.1:\(agent.port)/v1/events"))
        for chunk in chunks {
            var request = URLRequest(url: url)
            request.httpMethod = "POST"
            request.setValue("application/x-ndjson", forHTTPHeaderField: "Content-Type")
            let response: URLResponse
            do {
                (_, response) = try await URLSession.shared.upload(for: request, from: Data(chunk))
            } catch {
                Issue.record("POST to the agent failed: \(error); agent running: \(agent.process.isRunning)\n\(agent.logText)")
                return
            }
            let status = (response as? HTTPURLResponse)?.statusCode ?? 0
            #expect(status == 200 || status == 207, "the agent answered \(status)")
        }

        // Wait, at most 120 s, for the agent's spool to be drained into the collector.
        let drained = try await eventually(.seconds(120)) {
            #expect(collector.process.isRunning && agent.process.isRunning, "\(collector.logText)\n\(agent.logText)")
            return try await spoolBacklog(spool, unprivileged: true) == 0
        }
        #expect(drained, "the spool did not drain: \(agent.logText)")

        let compare = try await BinaryRunner.run(
            "tallyctl", ["compare", "--expect", expectFile, "--store", ledger, "--pricing", pricing, "--top", "3"], unprivileged: true)
        #expect(compare.status == 0, "\(compare.stdoutText)\(compare.stderr)")
        let summary = compare.stdoutText.split(separator: "\n").last.map(String.init) ?? ""
        let counts = summary.split(separator: " ").compactMap { Int($0) }
        #expect(counts.count == 2 && counts[0] == counts[1] && counts[0] > 100, "\(summary)")
    }
}
