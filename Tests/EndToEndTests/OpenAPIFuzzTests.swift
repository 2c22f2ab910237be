import Foundation
import TallyCore
import Testing

#if canImport(FoundationNetworking)
import FoundationNetworking
import TallyTestSupport
#endif

/// schemathesis against a real agent and a real collector, each with its document in
/// `protocol/` (`openapi-agent.yaml`, `openapi.yaml`): nothing it sends may get a 5xx or take
/// a process down, and every answer must be what the document says (status, content type,
/// headers, body schema). The agent ships what schemathesis got accepted to the collector, so
/// the collector's ledger takes the fuzzed events too, and must drain the agent's spool.
/// Without schemathesis the test is skipped with a loud line, except in CI, where it fails.
@Suite(.serialized) struct OpenAPIFuzzTests {
    static let adminKey = "openapi-admin-key-0123456789"
    static let acmeKey = "openapi-acme-key-0123456789"
    /// No 5xx, and every answer as documented: status, media type, headers, body schema.
    static let checks = [
        "not_a_server_error", "status_code_conformance", "content_type_conformance", "response_headers_conformance",
        "response_schema_conformance",
    ]
    /// The agent answers other methods on its paths `405` with the documented ones in `Allow`.
    static let agentChecks = checks + ["unsupported_method", "allow_header_conformance"]
    /// The collector refuses an API read that succeeded with the key once the key is removed
    /// or replaced. (Hummingbird answers another method `404`, so no `unsupported_method`.)
    static let collectorChecks = checks + ["ignored_auth"]

    @Test func schemathesisFindsNoServerErrorAndNoDeviationFromTheDocuments() async throws {
        guard let schemathesis = try Schemathesis.locate() else { return }
        let directory = try ServiceProcess.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let pricing = directory.appendingPathComponent("pricing.yaml").path
        try FileManager.default.copyItem(
            atPath: BinaryRunner.packageRoot.appendingPathComponent("deploy/demo-pricing.yaml").path, toPath: pricing)
        let config = directory.appendingPathComponent("collector.yaml").path
        try """
        store: sqlite:\(directory.path)/ledger.db
        pricing: \(pricing)
        admin_key: \(Self.adminKey)
        api_keys:
          - key: \(Self.acmeKey)
            tenant: acme
        """.write(toFile: config, atomically: true, encoding: .utf8)
        let httpPort = try freePort()
        let collector = try await ServiceProcess(directory: directory, arguments: ["--config", config, "--http", "127.0.0.1:\(httpPort)"])
        defer { collector.kill() }
        let spool = directory.appendingPathComponent("spool").path
        let agent = try await ServiceProcess(
            directory: directory,
            arguments: [
                "--spool", spool, "--collector", "127.0.0.1:\(collector.port)", "--agent-id", "openapi", "--default-metric", "api_calls",
            ],
            binary: "tally-agent", readyPattern: #"address=127\.0\.0\.1:([0-9]+)"#)
        defer { agent.kill() }
        let collectorURL = "http://127.0.0.1:\(httpPort)"
        let agentURL = "http://127.0.0.1:\(agent.port)"

        // Both up, the agent connected; then a few of acme's events through the agent, so the
        // documents' example tenant has usage and invoices to read.
        try #require(try await eventually(.seconds(60)) { try await status(collectorURL + "/readyz") == 200 }, "\(collector.logText)")
        try #require(try await eventually(.seconds(60)) { try await status(agentURL + "/healthz") == 200 }, "\(agent.logText)")
        let now = EventTime.now().advanced(by: .seconds(-60))
        let seed = """
            {"tenant":"acme","metric":"api_calls","quantity":3,"timestamp":"\(now)","id":"openapi-1","properties":{"endpoint":"/search"}}
            {"tenant":"acme","metric":"bytes_out","quantity":"2048","timestamp":"\(now)","id":"openapi-2"}
            {"user_id":"acme","endpoint":"/export","units":1,"timestamp":"\(now)"}

            """
        try #require(try await status(agentURL + "/v1/events", post: seed) == 200)
        try #require(
            try await eventually(.seconds(60)) {
                try await status(collectorURL + "/v1/tenants/acme/charges", key: Self.adminKey) == 200
            }, "acme's events did not reach the collector: \(agent.logText)")

        let runs: [(name: String, document: String, url: String, headers: [String], checks: [String])] = [
            ("agent", "openapi-agent.yaml", agentURL, [], Self.agentChecks),
            ("collector, admin key", "openapi.yaml", collectorURL, ["Authorization: Bearer \(Self.adminKey)"], Self.collectorChecks),
            ("collector, acme's key", "openapi.yaml", collectorURL, ["Authorization: Bearer \(Self.acmeKey)"], Self.collectorChecks),
        ]
        for (index, run) in runs.enumerated() {
            let outcome = try await schemathesis.run(
                document: BinaryRunner.packageRoot.appendingPathComponent("protocol/\(run.document)").path, baseURL: run.url,
                headers: run.headers, checks: run.checks, maxExamples: 100, seed: 14 + UInt64(index), directory: directory,
                timeout: .seconds(150))
            #expect(outcome.status == 0, "schemathesis against the \(run.name) failed:\n\(outcome.output)")
            // Every operation of the document was tested, none failed, none was skipped.
            let operations = try #require(outcome.documentedOperations, "\(outcome.output)")
            #expect(operations > 0)
            #expect(
                outcome.report == Schemathesis.JUnitCounts(tests: operations),
                "schemathesis against the \(run.name): \(String(describing: outcome.report))\n\(outcome.output)")
            #expect(collector.process.isRunning, "the collector died during the \(run.name) run:\n\(collector.logText)")
            #expect(agent.process.isRunning, "the agent died during the \(run.name) run:\n\(agent.logText)")
        }

        // Whatever the agent accepted, the collector committed (the spool drains) and explained
        // (received = accepted + duplicate + late + rejected).
        #expect(try await eventually(.seconds(60)) { try await spoolBacklog(spool) == 0 }, "\(agent.logText)\n\(collector.logText)")
        let reconciliation = try await json(collectorURL + "/v1/reconciliation", key: Self.adminKey)
        let total = try #require(reconciliation?["total"] as? [String: Any], "\(String(describing: reconciliation))")
        #expect(total["balances"] as? Bool == true, "\(total)")
        #expect((total["received"] as? Int ?? 0) > 3, "schemathesis got no event through the agent: \(total)")
        #expect(try await status(collectorURL + "/readyz") == 200)
        #expect(try await status(agentURL + "/healthz") == 200)
        #expect(await agent.stop() == 0, "\(agent.logText)")
        #expect(await collector.stop() == 0, "\(collector.logText)")
    }

    /// Without schemathesis the test skips with a loud line, except in CI, where it fails.
    @Test func aMissingSchemathesisSkipsHereAndFailsInCI() throws {
        let missing = ["/nonexistent/tally/schemathesis"]
        #expect(try Schemathesis.locate(candidates: missing, inCI: false) == nil)
        #expect(throws: HarnessError.self) { try Schemathesis.locate(candidates: missing, inCI: true) }
        let found = try Schemathesis.locate(candidates: missing + ["/bin/sh"], inCI: true)
        #expect(found?.executable.path == "/bin/sh")
    }

    /// The status of a GET (or, with `post`, a POST of NDJSON), nil when nothing answered.
    private func status(_ url: String, key: String? = nil, post: String? = nil) async throws -> Int? {
        try await exchange(url, key: key, post: post)?.status
    }

    /// The JSON object a GET answered, nil when it answered none.
    private func json(_ url: String, key: String? = nil) async throws -> [String: Any]? {
        guard let answer = try await exchange(url, key: key), answer.status == 200 else { return nil }
        return try JSONSerialization.jsonObject(with: answer.body) as? [String: Any]
    }

    private func exchange(_ url: String, key: String? = nil, post: String? = nil) async throws -> (status: Int, body: Data)? {
        var request = URLRequest(url: try #require(URL(string: url)))
        if let key { request.setValue("Bearer \(key)", forHTTPHeaderField: "Authorization") }
        if let post {
            request.httpMethod = "POST"
            request.setValue("application/x-ndjson", forHTTPHeaderField: "Content-Type")
            request.httpBody = Data(post.utf8)
        }
        guard let (body, response) = try? await URLSession.shared.data(for: request), let http = response as? HTTPURLResponse else {
            return nil
        }
        return (http.statusCode, body)
    }
}
