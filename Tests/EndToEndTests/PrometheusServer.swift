import Foundation
import TallyClient
import TallyTestSupport

/// The tools the monitoring test needs beside Tally's binaries: Debian's `prometheus` and the
/// Python of the venv that `TALLY_NEEDS_TOOLS=1 scripts/install-deps.sh` makes under
/// `.build-tools/venv` (for scripts/deploy_checks.py, which reads the dashboard and the rules).
struct MonitoringTools {
    let prometheus: String
    let python: String

    /// The tools, or nil after one loud line on stderr when one is missing and the environment
    /// variable `CI` is not `true` or `1`; in CI a missing tool throws.
    static func locate() throws -> MonitoringTools? {
        let python = BinaryRunner.packageRoot.appendingPathComponent(".build-tools/venv/bin/python").path
        let prometheus = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"].first { FileManager.default.isExecutableFile(atPath: $0) }
        var missing: [String] = []
        if prometheus == nil { missing.append("prometheus (Debian's prometheus)") }
        if !FileManager.default.isExecutableFile(atPath: python) { missing.append("\(python) (the tools venv)") }
        guard let prometheus, missing.isEmpty else {
            let line = "monitoring test SKIPPED: missing \(missing.joined(separator: ", ")) — run TALLY_NEEDS_TOOLS=1 scripts/install-deps.sh"
            let value = ProcessInfo.processInfo.environment["CI"]?.lowercased()
            if value == "true" || value == "1" { throw HarnessError(line.replacingOccurrences(of: "SKIPPED", with: "cannot run in CI")) }
            FileHandle.standardError.write(Data("\(line)\n".utf8))
            return nil
        }
        return MonitoringTools(prometheus: prometheus, python: python)
    }
}

/// What deploy/monitoring/ queries, as scripts/deploy_checks.py reads it (`metrics`): every
/// expression of the dashboard and of the alert rules with the metric names it selects. One
/// reader for the check script and this test, so the two cannot disagree.
struct MonitoredExpressions: Decodable {
    struct Expression: Decodable {
        let `where`: String
        let expr: String
        /// The expression as Prometheus takes it (Grafana's `$__rate_interval` replaced).
        let promql: String
        let metrics: [String]
    }

    let expressions: [Expression]
    /// Every metric name the expressions use (a test may leave out those it cannot produce).
    var metrics: [String]

    static func load(python: String, scratch: URL) throws -> MonitoredExpressions {
        let script = BinaryRunner.packageRoot.appendingPathComponent("scripts/deploy_checks.py").path
        let answer = scratch.appendingPathComponent("monitored-expressions.json")
        let outcome = try BinaryRunner.runSystem(python, [script, "metrics", "--output", answer.path])
        guard outcome.status == 0 else { throw HarnessError("deploy_checks.py metrics failed: \(outcome.stderr)") }
        return try JSONDecoder().decode(MonitoredExpressions.self, from: try Data(contentsOf: answer))
    }
}

/// A real Prometheus server on a free loopback port with its own config and storage under a
/// temporary directory, scraping the given targets every second and evaluating `ruleFiles`
/// every second. It is tied to the test process (``ChildSpawner``).
final class PrometheusServer: Sendable {
    let port: Int
    let process: Process
    let logFile: URL

    init(binary: String, directory: URL, targets: [(job: String, address: String)], ruleFiles: [String]) throws {
        port = try freeLoopbackPort()
        var config = """
            global:
              scrape_interval: 1s
              scrape_timeout: 1s
              evaluation_interval: 1s
            rule_files:\(ruleFiles.isEmpty ? " []" : "")

            """
        for file in ruleFiles { config += "  - \"\(file)\"\n" }
        config += "scrape_configs:\n"
        for target in targets {
            config += "  - job_name: \"\(target.job)\"\n    static_configs:\n      - targets: [\"\(target.address)\"]\n"
        }
        let configFile = directory.appendingPathComponent("prometheus.yml")
        try config.write(to: configFile, atomically: true, encoding: .utf8)
        logFile = directory.appendingPathComponent("prometheus.log")
        _ = FileManager.default.createFile(atPath: logFile.path, contents: nil)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = [
            "--config.file=\(configFile.path)", "--storage.tsdb.path=\(directory.appendingPathComponent("prometheus-data").path)",
            "--web.listen-address=127.0.0.1:\(port)", "--storage.tsdb.retention.time=1h",
        ]
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = try FileHandle(forWritingTo: logFile)
        process.standardError = try FileHandle(forWritingTo: logFile)
        try ChildSpawner.run(process)
        self.process = process
    }

    var log: String { (try? String(contentsOf: logFile, encoding: .utf8)) ?? "" }

    func stop() {
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
    }

    /// GET `path` with `query` on the server's HTTP API; the decoded JSON answer (Prometheus
    /// answers JSON for errors too, with `status: error`).
    func api(_ path: String, _ query: [String: String] = [:]) async throws -> [String: Any] {
        var components = URLComponents()
        components.queryItems = query.isEmpty ? nil : query.map { URLQueryItem(name: $0.key, value: $0.value) }
        // "+" is a space in a query string: PromQL's additions must arrive as pluses.
        let encoded = components.percentEncodedQuery?.replacingOccurrences(of: "+", with: "%2B")
        // A connection Prometheus drops before answering (seen twice in CI runs under full load,
        // "closed the connection before the answer was complete") is asked again, up to three
        // times; an answer, whatever its status, is returned as it is.
        var attempt = 1
        var answer: HTTPExchange.Response
        while true {
            do {
                answer = try await HTTPExchange(host: "127.0.0.1", port: port).request(
                    method: "GET", path: path + (encoded.map { "?" + $0 } ?? ""), timeout: .seconds(10))
                break
            } catch {
                guard attempt < 3 else { throw HarnessError("Prometheus \(path), \(attempt) attempts: \(error)") }
                attempt += 1
                try await Task.sleep(for: .milliseconds(200))
            }
        }
        guard let object = try JSONSerialization.jsonObject(with: Data(answer.text.utf8)) as? [String: Any] else {
            throw HarnessError("\(path): not a JSON object: \(answer.status) \(answer.text)")
        }
        return object
    }

    /// Whether Prometheus answers on its HTTP port yet.
    func isUp() async -> Bool { (try? await api("/api/v1/status/buildinfo"))?["status"] as? String == "success" }

    /// The scrape targets Prometheus reports as up.
    func targetsUp() async throws -> Int {
        let data = try await api("/api/v1/targets")["data"] as? [String: Any]
        let active = data?["activeTargets"] as? [[String: Any]] ?? []
        return active.filter { $0["health"] as? String == "up" }.count
    }

    /// An instant query: its status (`success` or `error`), the error, and the result's series.
    func query(_ promql: String) async throws -> (status: String, error: String?, series: [[String: Any]]) {
        let answer = try await api("/api/v1/query", ["query": promql])
        let result = (answer["data"] as? [String: Any])?["result"] as? [[String: Any]] ?? []
        return (answer["status"] as? String ?? "?", answer["error"] as? String, result)
    }

    /// Every alerting rule loaded: its name, health (`ok`, `err`, or `unknown` before its first
    /// evaluation) and last error.
    func rules() async throws -> [(name: String, health: String, error: String?)] {
        let groups = ((try await api("/api/v1/rules"))["data"] as? [String: Any])?["groups"] as? [[String: Any]] ?? []
        return groups.flatMap { group in
            (group["rules"] as? [[String: Any]] ?? []).map {
                ($0["name"] as? String ?? "?", $0["health"] as? String ?? "?", ($0["lastError"] as? String).flatMap { $0.isEmpty ? nil : $0 })
            }
        }
    }
}
