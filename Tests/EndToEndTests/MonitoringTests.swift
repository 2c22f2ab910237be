import Foundation
import NIOCore
import TallyClient
import TallyTestSupport
import Testing

/// deploy/monitoring/ against a real Prometheus: a real agent and collector (SQLite) carry some
/// events, a real Prometheus scrapes both every second and evaluates the alert rules, and then
/// every metric that the Grafana dashboard or an alert rule names must have data, every
/// dashboard expression must be valid PromQL to that server, and every rule must evaluate
/// without an error. The names come from the files themselves (scripts/deploy_checks.py), so a
/// renamed metric, a typo or a new panel cannot drift past this test.
@Suite(.serialized) struct MonitoringTests {
    @Test func everyMetricOfTheDashboardAndTheAlertsHasDataInARealPrometheus() async throws {
        guard let tools = try MonitoringTools.locate() else { return }
        let directory = try ServiceProcess.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        var monitored = try MonitoredExpressions.load(python: tools.python, scratch: directory)
        // Both files were read: the dashboard's panels and the rules' expressions.
        #expect(monitored.expressions.contains { $0.where.contains("tally-dashboard.json") })
        #expect(monitored.expressions.contains { $0.where.contains("tally-alerts.yaml") })
        #expect(monitored.metrics.contains("tally_agent_spool_events") && monitored.metrics.contains("tally_collector_commit_seconds_bucket"))

        // The collector prices, exports and checks usage alerts, so that their metrics exist: the
        // billing platform and the webhook receiver are ports nothing listens on (the attempts
        // fail and are counted), and a threshold of 10 calls is crossed by the events below.
        let closedPort = try freePort()
        try """
        metrics:
          - name: api_calls
            aggregation: sum
        plans:
          - id: starter
            currency: USD
            charges:
              - metric: api_calls
                model: per_unit
                unit_price: "0.001"
        default_plan: starter
        alerts:
          - name: calls-10
            metric: api_calls
            quantity: 10
        """.write(to: directory.appendingPathComponent("pricing.yaml"), atomically: true, encoding: .utf8)
        try "monitoring-secret\n".write(to: directory.appendingPathComponent("secret"), atomically: true, encoding: .utf8)
        try """
        exports:
          base_url: http://127.0.0.1:\(closedPort)
          api_key_file: \(directory.path)/secret
        alerts:
          webhook_url: http://127.0.0.1:\(closedPort)/hooks
          secret_file: \(directory.path)/secret
          every: 200ms
          initial_backoff: 100ms
        """.write(to: directory.appendingPathComponent("collector.yaml"), atomically: true, encoding: .utf8)
        let httpPort = try freePort()
        let collector = try await ServiceProcess(
            directory: directory,
            arguments: [
                "--config", "\(directory.path)/collector.yaml", "--pricing", "\(directory.path)/pricing.yaml", "--store",
                "sqlite:\(directory.path)/ledger.db", "--http", "127.0.0.1:\(httpPort)",
            ])
        defer { collector.kill() }
        let spool = directory.appendingPathComponent("spool").path
        let agent = try await ServiceProcess(
            directory: directory,
            arguments: ["--spool", spool, "--collector", "127.0.0.1:\(collector.port)", "--agent-id", "monitoring", "--default-metric", "api_calls"],
            binary: "tally-agent", readyPattern: #"address=127\.0\.0\.1:([0-9]+)"#)
        defer { agent.kill() }

        // Data flows: 50 events and one invalid line through the agent into the collector.
        let now = ISO8601DateFormatter().string(from: Date())
        var body = (0..<50).map { #"{"tenant":"acme","metric":"api_calls","quantity":1,"timestamp":"\#(now)","id":"m-\#($0)"}"# }
        body.append(#"{"tenant":"acme","quantity":1}"#)
        let posted = try await HTTPExchange(host: "127.0.0.1", port: agent.port).request(
            method: "POST", path: "/v1/events", headers: [("Content-Type", "application/x-ndjson")],
            body: ByteBuffer(string: body.joined(separator: "\n")))
        #expect(posted.status == 207, "one line of the body is invalid: \(posted.text)")
        let drained = try await eventually(.seconds(60)) { try await spoolBacklog(spool) == 0 }
        #expect(drained, "the agent's spool did not drain: \(agent.logText)\n\(collector.logText)")

        // The usage API answers a read (query latency) and refuses an unknown key (auth failures).
        // A failed exchange says what the collector logged. (CI runs saw this port "close a
        // connection before answering": the client's, fixed in HTTPExchange, which wrote the end
        // of its request after the collector had answered and closed; FreshConnectionTests.)
        let api = HTTPExchange(host: "127.0.0.1", port: httpPort)
        func exchange(_ headers: [(String, String)] = []) async throws -> HTTPExchange.Response {
            do {
                return try await api.request(method: "GET", path: "/v1/usage?tenant=acme&metric=api_calls", headers: headers)
            } catch {
                throw HarnessError("\(error)\n--- collector (HTTP \(httpPort)):\n\(collector.logText)\n--- agent:\n\(agent.logText)")
            }
        }
        let read = try await exchange()
        #expect(read.status == 200, "\(read.text)")
        let denied = try await exchange([("Authorization", "Bearer not-a-key-0123456789")])
        #expect(denied.status == 401, "\(denied.text)")

        // A second collector on PostgreSQL, for the metrics only a PostgreSQL ledger has (its
        // raw-insert counters, registered when the store opens). Outside CI without a server,
        // those metrics are left out of the check, loudly.
        var targets = [("tally-collector", "127.0.0.1:\(httpPort)"), ("tally-agent", "127.0.0.1:\(agent.port)")]
        var postgresCollector: ServiceProcess?
        var postgresDatabase: (server: PostgresTestServer, name: String)?
        defer {
            postgresCollector?.kill()
            if let postgresDatabase { postgresDatabase.server.dropDatabase(postgresDatabase.name) }
        }
        if let server = try await PostgresTestServer.shared() {
            let url = try server.createDatabase("monitoring")
            postgresDatabase = (server, try #require(PostgresTestServer.databaseName(in: url)))
            let postgresHTTP = try freePort()
            postgresCollector = try await ServiceProcess(
                directory: directory, arguments: ["--store", url, "--http", "127.0.0.1:\(postgresHTTP)"])
            targets.append(("tally-collector-postgres", "127.0.0.1:\(postgresHTTP)"))
        } else {
            print("MonitoringTests: no PostgreSQL server here; the PostgreSQL-only metrics are not checked")
            monitored.metrics.removeAll { $0.hasPrefix("tally_ledger_") }
        }

        let alerts = BinaryRunner.packageRoot.appendingPathComponent("deploy/monitoring/tally-alerts.yaml").path
        let prometheus = try PrometheusServer(
            binary: tools.prometheus, directory: directory, targets: targets, ruleFiles: [alerts])
        defer { prometheus.stop() }
        // Which port is which, for a failure that names only a port.
        print("MonitoringTests: collector HTTP \(httpPort), agent \(agent.port), Prometheus \(prometheus.port)")
        let serving = await eventually(.seconds(60)) { await prometheus.isUp() }
        try #require(serving, "prometheus did not start: \(prometheus.log)")
        let scraped = try await eventually(.seconds(60)) { try await prometheus.targetsUp() == targets.count }
        try #require(scraped, "prometheus did not scrape all \(targets.count) targets: \(prometheus.log)")

        // Every metric the files name, with data. Polled: a gauge or a route's histogram appears
        // at the scrape after its first use.
        var missing = monitored.metrics
        let complete = try await eventually(.seconds(60)) {
            var stillMissing: [String] = []
            for name in missing {
                if try await prometheus.query(name).series.isEmpty { stillMissing.append(name) }
            }
            missing = stillMissing
            return missing.isEmpty
        }
        #expect(complete, "metrics the dashboard or the alert rules use that have no data in Prometheus: \(missing)")
        // The same question about a metric no binary exports gets no data: the check can fail.
        #expect(try await prometheus.query("tally_collector_no_such_metric_total").series.isEmpty)

        // Every expression as Prometheus itself parses and evaluates it.
        for expression in monitored.expressions {
            let answer = try await prometheus.query(expression.promql)
            #expect(answer.status == "success", "\(expression.where): \(answer.error ?? "?")\n\(expression.promql)")
        }
        let invalid = try await prometheus.query("sum by (instance (tally_agent_spool_events)")
        #expect(invalid.status == "error", "an invalid expression must be refused, or the loop above proves nothing")

        // The rules were loaded from deploy/monitoring/ and each evaluates on the scraped data.
        let ruleNames = monitored.expressions.filter { $0.where.contains("tally-alerts.yaml") }.count
        var rules: [(name: String, health: String, error: String?)] = []
        let evaluated = try await eventually(.seconds(60)) {
            rules = try await prometheus.rules()
            return rules.count == ruleNames && rules.allSatisfy { $0.health != "unknown" }
        }
        #expect(evaluated, "the rules were not all loaded and evaluated: \(rules)\n\(prometheus.log)")
        let failing = rules.filter { $0.health != "ok" }
        #expect(failing.isEmpty, "rules that fail to evaluate: \(failing)")
    }
}
