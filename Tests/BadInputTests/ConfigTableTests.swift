import TallyAgent
import TallyCollector
import TallyConfig
import TallyPricing
import Testing

/// One row of a config table: a YAML file with one kind of mistake, and the exact issue the
/// loader must report — the place, its line and column, the problem.
struct ConfigRow: Sendable, CustomTestStringConvertible {
    let name: String
    let yaml: String
    let issue: ConfigIssue

    init(_ name: String, _ yaml: String, _ place: String, _ line: Int?, _ column: Int?, _ problem: String) {
        self.name = name
        self.yaml = yaml
        self.issue = ConfigIssue(place: place, problem: problem, line: line, column: column)
    }

    var testDescription: String { name }
}

enum ConfigRows {
    static let duration = "is not a duration (use e.g. 250ms, 30s, 5m, 72h, 35d)"

    static let agent: [ConfigRow] = [
        ConfigRow(
            "unknown key", "colour: red\n", "colour", 1, 1,
            "unknown key 'colour'; expected one of: agent_id, key, listen, socket, collectors, default_metric, spool, batch, window, reconnect, max_body_bytes, http, events, tls, allow_plaintext_remote"
        ),
        ConfigRow(
            "unknown nested key", "spool:\n  max_byte: 1048576\n", "spool.max_byte", 2, 3,
            "unknown key 'max_byte'; expected one of: directory, max_bytes, segment_bytes, fsync, full_policy, retry_after"),
        ConfigRow("a key twice", "window: 4\nwindow: 8\n", "window", 2, 1, "'window' is given twice"),
        ConfigRow(
            "a value where a mapping goes", "spool: 5\n", "spool", 1, 8,
            "expected a mapping of keys (directory, max_bytes, segment_bytes, fsync, full_policy, retry_after)"),
        ConfigRow("a list where a value goes", "window: [1, 2]\n", "window", 1, 9, "expected a single value, not a list or mapping"),
        ConfigRow("an empty value", "agent_id: \"\"\n", "agent_id", 1, 11, "must not be empty"),
        ConfigRow("a null value", "key: ~\n", "key", 1, 6, "must not be empty"),
        ConfigRow("out of range (low)", "window: 0\n", "window", 1, 9, "'0' must be a whole number from 1 to 1024"),
        ConfigRow(
            "out of range (spool.max_bytes)", "spool:\n  max_bytes: 1000\n", "spool.max_bytes", 2, 14,
            "'1000' must be a whole number from 1048576 to 9223372036854775807"),
        ConfigRow(
            "out of range (events.max_properties)", "events:\n  max_properties: 300\n", "events.max_properties", 2, 19,
            "'300' must be a whole number from 0 to 256"),
        ConfigRow("a size with a unit", "max_body_bytes: 8MB\n", "max_body_bytes", 1, 17, "'8MB' must be a whole number from 1024 to 268435456"),
        ConfigRow("a duration with a space", "batch:\n  linger: 50 ms\n", "batch.linger", 2, 11, "'50 ms' \(duration)"),
        ConfigRow("a duration in weeks", "reconnect:\n  initial: 5w\n", "reconnect.initial", 2, 12, "'5w' \(duration)"),
        ConfigRow("a duration below its minimum", "http:\n  header_timeout: 10ms\n", "http.header_timeout", 2, 19, "must be at least 100ms"),
        ConfigRow(
            "an unknown fsync policy", "spool:\n  fsync: sometimes\n", "spool.fsync", 2, 10,
            "'sometimes' must be always, never or an interval such as 5ms"),
        ConfigRow(
            "an unknown full policy", "spool:\n  full_policy: drop\n", "spool.full_policy", 2, 16, "'drop' must be block (503) or reject (429)"),
        ConfigRow("not a boolean", "allow_plaintext_remote: maybe\n", "allow_plaintext_remote", 1, 25, "'maybe' must be true or false"),
        ConfigRow("not HOST:PORT", "listen: nowhere\n", "listen", 1, 9, "listen 'nowhere' must be HOST:PORT with a port from 0 to 65535"),
        ConfigRow(
            "a collector without a port", "collectors:\n  - 127.0.0.1:7400\n  - collector-b\n", "collectors[1]", 3, 5,
            "collectors[1] 'collector-b' must be HOST:PORT with a port from 0 to 65535"),
        ConfigRow(
            "half a client certificate", "tls:\n  certificate: agent.pem\n", "tls", 2, 3,
            "certificate and private_key go together: give both for a client certificate, or neither"),
        ConfigRow(
            "not a mapping at all", "- a\n- b\n", "", 1, 1,
            "expected a mapping of keys (agent_id, key, listen, socket, collectors, default_metric, spool, batch, window, reconnect, max_body_bytes, http, events, tls, allow_plaintext_remote)"
        ),
        ConfigRow("invalid YAML", "spool: [\n", "", 2, 1, "not valid YAML: did not find expected node content while parsing a flow node"),
        ConfigRow(
            "a tab for indentation", "spool:\n\tfsync: never\n", "", 2, 1,
            "not valid YAML: found character that cannot start any token while scanning for the next token"),
        ConfigRow("two documents", "window: 4\n---\nwindow: 8\n", "", 2, 1, "not valid YAML: expected one YAML document, found a second"),
        ConfigRow(
            "nested too deep", "window: " + String(repeating: "[", count: 70) + "\n", "", 1, 72, "not valid YAML: nested deeper than 64 levels"),
    ]

    static let collector: [ConfigRow] = [
        ConfigRow(
            "unknown key", "colour: red\n", "colour", 1, 1,
            "unknown key 'colour'; expected one of: store, listen, http, tls, allow_plaintext_remote, pricing, admin_key, agents, api_keys, late, dedupe_horizon, limits, events, exports, alerts, realtime_priority"
        ),
        ConfigRow("a value where a list goes", "agents: edge-1\n", "agents", 1, 9, "expected a list"),
        ConfigRow("a required key missing", "agents:\n  - id: edge-1\n", "agents[0].secret", 2, 5, "is required"),
        ConfigRow(
            "a secret too short", "agents:\n  - id: edge-1\n    secret: short\n", "agents[0].secret", 3, 13, "is 5 bytes; a key must have at least 16"
        ),
        ConfigRow(
            "an API key without its tenant", "api_keys:\n  - key: abcdefghijklmnopqrstu\n", "api_keys[0].tenant", 2, 5, "is required"),
        ConfigRow(
            "an admin key with spaces", "admin_key: \"has spaces in it, long enough\"\n", "admin_key", 1, 12,
            "must not contain spaces or control characters"),
        ConfigRow("an empty store", "store: ''\n", "store", 1, 8, "must not be empty"),
        ConfigRow("an unknown late policy", "late:\n  policy: forget\n", "late.policy", 2, 11, "'forget' must be adjust or reject"),
        ConfigRow("a bad duration", "late:\n  grace: soon\n", "late.grace", 2, 10, "'soon' \(duration)"),
        ConfigRow("a duration in words", "dedupe_horizon: 35 days\n", "dedupe_horizon", 1, 17, "'35 days' \(duration)"),
        ConfigRow(
            "out of range (frame bytes)", "limits:\n  max_frame_bytes: 100\n", "limits.max_frame_bytes", 2, 20,
            "'100' must be a whole number from 1024 to 268435456"),
        ConfigRow(
            "out of range (events per batch)", "limits:\n  max_events_per_batch: 0\n", "limits.max_events_per_batch", 2, 25,
            "'0' must be a whole number from 1 to 100000"),
        ConfigRow(
            "out of range (real-time priority)", "realtime_priority: 100\n", "realtime_priority", 1, 20,
            "'100' must be a whole number from 0 to 99"),
        ConfigRow("a TLS key missing", "tls:\n  listen:\n    certificate: a.pem\n", "tls.listen.private_key", 3, 5, "is required"),
        ConfigRow("not HOST:PORT", "http: 7480\n", "http", 1, 7, "http '7480' must be HOST:PORT with a port from 0 to 65535"),
        ConfigRow("exports without a base URL", "exports:\n  every: 1h\n", "exports.base_url", 2, 3, "is required"),
        ConfigRow(
            "exports with a list for meters", "exports:\n  base_url: https://x\n  meters: [a]\n", "exports.meters", 3, 11,
            "expected a mapping of names to values"),
        ConfigRow(
            "alerts without a secret", "alerts:\n  webhook_url: https://hooks.example.com/t\n", "alerts.secret_env", 2, 3,
            "the webhooks are signed: give secret_env or secret_file"),
        ConfigRow(
            "an alerts URL that is not HTTP", "alerts:\n  webhook_url: ftp://x\n  secret_env: S\n", "alerts.webhook_url", 2, 16,
            "'ftp://x' must start with https:// (or http:// for a loopback receiver)"),
        ConfigRow(
            "invalid YAML", "agents:\n  - id: a\n   secret: b\n", "", 3, 4,
            "not valid YAML: did not find expected '-' indicator while parsing a block collection"),
    ]

    static let pricingMetrics = """
        metrics:
          - name: api_calls
            aggregation: sum

        """

    /// A plan charging `api_calls` with `lines` as its price (indented for a charge).
    static func plan(_ lines: String) -> String {
        pricingMetrics + "plans:\n  - id: p\n    currency: USD\n    charges:\n      - metric: api_calls\n" + lines
    }

    /// A valid file with one alert named `x` whose other keys are `lines` (indented for it).
    static func alerted(_ lines: String) -> String {
        plan("        model: per_unit\n        unit_price: \"1\"\n") + "alerts:\n  - name: x\n" + lines
    }

    static let pricing: [ConfigRow] = [
        ConfigRow("an empty file", "", "", nil, nil, "the file is empty"),
        ConfigRow("a required section missing", "metrics: []\n", "plans", 1, 1, "is required"),
        ConfigRow(
            "unknown key", pricingMetrics + "    colour: red\nplans: []\n", "metrics[0].colour", 4, 5,
            "unknown key 'colour'; expected one of: name, aggregation, property, per, group_by, filters, unit"),
        ConfigRow("a value where a list goes", "metrics: api_calls\nplans: []\n", "metrics", 1, 10, "expected a list"),
        ConfigRow(
            "an unknown aggregation", "metrics:\n  - name: api_calls\n    aggregation: median\nplans: []\n", "metrics[0].aggregation", 3, 18,
            "unknown aggregation 'median'; expected sum, count, max, min, avg, weighted_sum, unique_count or latest"),
        ConfigRow(
            "a metric name that is not a name", "metrics:\n  - name: api calls\n    aggregation: sum\nplans: []\n", "metrics[0].name", 2, 11,
            "'api calls' is not a valid name (a letter, then letters, digits, '_', '.', ':' or '-'; at most 64 bytes)"),
        ConfigRow(
            "an unknown currency", pricingMetrics + "plans:\n  - id: p\n    currency: USX\n    charges: []\n", "plans[0].currency", 6, 15,
            "unknown currency 'USX'; expected an ISO 4217 code such as USD, EUR or JPY"),
        ConfigRow(
            "a negative quantity", plan("        model: per_unit\n        unit_price: \"0.001\"\n        free: -1\n"), "plans[0].charges[0].free", 11,
            15,
            "must not be negative (got -1)"),
        ConfigRow(
            "a quantity that is not a number", plan("        model: per_unit\n        unit_price: \"0.001\"\n        free: lots\n"),
            "plans[0].charges[0].free", 11, 15, "'lots' is not a decimal number"),
        ConfigRow(
            "a quantity too precise", plan("        model: per_unit\n        unit_price: \"0.001\"\n        free: 0.0000000001\n"),
            "plans[0].charges[0].free", 11, 15, "'0.0000000001' has more than 9 decimal places"),
        ConfigRow(
            "a price in exponent form", plan("        model: per_unit\n        unit_price: 1e-3\n"), "plans[0].charges[0].unit_price", 10, 21,
            "'1e-3' is not a plain decimal number (e.g. 0.001)"),
        ConfigRow(
            "a package of zero", plan("        model: package\n        package_size: 0\n        package_price: \"5\"\n"),
            "plans[0].charges[0].package_size", 10, 23, "must be greater than 0"),
        ConfigRow(
            "a price model missing", plan("        unit_price: \"1\"\n"), "plans[0].charges[0].model", 8, 9, "is required"),
        ConfigRow(
            "tiers not increasing",
            plan(
                "        model: graduated\n        tiers:\n          - up_to: 100\n            unit_price: \"1\"\n          - up_to: 50\n            unit_price: \"0.5\"\n          - unit_price: \"0.1\"\n"
            ), "plans[0].charges[0].tiers[1].up_to", 13, 20, "tiers must increase: 50 is not above the previous tier's up_to 100"),
        ConfigRow(
            "a date where a timestamp goes",
            plan("        model: per_unit\n        unit_price: \"1\"\n") + "assignments:\n  - tenant: acme\n    plan: p\n    from: 2026-04-01\n",
            "assignments[0].from", 14, 11, "'2026-04-01' is not an RFC 3339 timestamp: too short; expected e.g. 2026-04-13T12:00:00Z"),
        ConfigRow(
            "an alert with two thresholds", alerted("    metric: api_calls\n    quantity: 10\n    percent_of_free: 80\n"), "alerts[0]", 12, 5,
            "give one threshold, not quantity and percent_of_free"),
        ConfigRow(
            "an alert on an unknown metric", alerted("    metric: api_call\n    quantity: 10\n"), "alerts[0].metric", 13, 13,
            "unknown metric 'api_call'; metrics are: api_calls"),
        ConfigRow(
            "an amount alert without its currency", alerted("    amount: \"5.00\"\n"), "alerts[0].currency", 12, 5, "is required"),
        ConfigRow(
            "a percentage out of range", alerted("    metric: api_calls\n    percent_of_free: 0\n"), "alerts[0].percent_of_free", 14, 22,
            "'0' must be a whole number from 1 to 1000"),
        ConfigRow(
            "an alert without a threshold", alerted("    metric: api_calls\n"), "alerts[0]", 12, 5,
            "needs a threshold: quantity, percent_of_free or amount"),
        ConfigRow(
            "invalid YAML", "metrics: [\nplans: []\n", "", 3, 1, "not valid YAML: did not find expected ',' or ']' while parsing a flow sequence"),
    ]
}

/// Section 5: config and pricing files. Each row's file fails to load with exactly one issue:
/// its place, line, column and problem, under the file's name.
@Suite("Bad input: config files")
struct ConfigTableTests {
    static func issues(_ load: () throws(ConfigError) -> Void) -> ConfigError? {
        do throws(ConfigError) {
            try load()
            return nil
        } catch {
            return error
        }
    }

    static func check(_ row: ConfigRow, _ error: ConfigError?, file: String) {
        guard let error else {
            Issue.record("\(row.name): loaded")
            return
        }
        #expect(error.file == file, "\(row.name)")
        #expect(error.issues == [row.issue], "\(row.name): \(error.issues.map { "\($0.line ?? 0):\($0.column ?? 0): \($0)" })")
    }

    @Test(arguments: ConfigRows.agent)
    func agent(_ row: ConfigRow) {
        Self.check(row, Self.issues { () throws(ConfigError) in _ = try AgentConfig.load(yaml: row.yaml, file: "agent.yaml") }, file: "agent.yaml")
    }

    @Test(arguments: ConfigRows.collector)
    func collector(_ row: ConfigRow) {
        Self.check(
            row, Self.issues { () throws(ConfigError) in _ = try CollectorConfig.load(yaml: row.yaml, file: "collector.yaml") },
            file: "collector.yaml")
    }

    @Test(arguments: ConfigRows.pricing)
    func pricing(_ row: ConfigRow) {
        Self.check(
            row, Self.issues { () throws(ConfigError) in _ = try PricingConfigLoader.load(yaml: row.yaml, file: "pricing.yaml") },
            file: "pricing.yaml")
    }

    /// The one-line form an operator reads names the file, the line and column, and the place.
    @Test func errorText() {
        let error = Self.issues { () throws(ConfigError) in _ = try AgentConfig.load(yaml: "spool:\n  max_bytes: 1000\n", file: "agent.yaml") }
        #expect(error?.description == "agent.yaml:2:14: spool.max_bytes: '1000' must be a whole number from 1048576 to 9223372036854775807")
    }
}
