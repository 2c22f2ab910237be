import Foundation
import Testing
import TallyCore
import TallyWorkload
#if canImport(FoundationNetworking)
import FoundationNetworking
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
        let collector = try ServiceProcess(directory: directory, arguments: ["--store", ledger, "--pricing", pricing], unprivileged: true)
        defer { collector.kill() }
        let spool = directory.appendingPathComponent("spool").path
        let agent = try ServiceProcess(
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
            let (_, response) = try await URLSession.shared.upload(for: request, from: Data(chunk))
            let status = (response as? HTTPURLResponse)?.statusCode ?? 0
            #expect(status == 200 || status == 207, "the agent answered \(status)")
        }

        // Wait, at most 120 s, for the agent's spool to be drained into the collector.
        let deadline = ContinuousClock.now + .seconds(120)
        var backlog = -1
        while ContinuousClock.now < deadline {
            #expect(collector.process.isRunning && agent.process.isRunning, "\(collector.logText)\n\(agent.logText)")
            let status = try BinaryRunner.run("tallyctl", ["spool", "status", "--spool", spool, "--json"], unprivileged: true)
            let json = try JSONSerialization.jsonObject(with: status.stdout) as? [String: Any]
            backlog = json?["events"] as? Int ?? -1
            if backlog == 0 { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect(backlog == 0, "the spool did not drain: \(agent.logText)")

        let compare = try BinaryRunner.run(
            "tallyctl", ["compare", "--expect", expectFile, "--store", ledger, "--pricing", pricing, "--top", "3"], unprivileged: true)
        #expect(compare.status == 0, "\(compare.stdoutText)\(compare.stderr)")
        let summary = compare.stdoutText.split(separator: "\n").last.map(String.init) ?? ""
        let counts = summary.split(separator: " ").compactMap { Int($0) }
        #expect(counts.count == 2 && counts[0] == counts[1] && counts[0] > 100, "\(summary)")
    }
}

/// A blocking loopback TCP connection for tests that speak raw bytes.
enum RawConnection {
    /// Connects to `port` on 127.0.0.1 and closes again without sending anything.
    static func touch(port: Int) throws {
        let fd = try open(port: port)
        close(fd)
    }

    /// A connected socket to `port` on 127.0.0.1.
    static func open(port: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw HarnessError("socket: \(String(cString: strerror(errno)))") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            close(fd)
            throw HarnessError("connect to 127.0.0.1:\(port): \(String(cString: strerror(errno)))")
        }
        return fd
    }
}
