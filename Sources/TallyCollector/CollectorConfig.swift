public import TallyConfig
public import TallyCore
import TallyLedger
import TallyWire

/// Everything a collector needs to run, with the brief's local defaults: embedded SQLite under
/// `./tally-data`, loopback ports 7400 (agents) and 7480 (HTTP).
///
/// Read from YAML (`CollectorConfig.load(file:)`), then overridden by flags. Unknown keys and bad
/// values are errors that name the file, the line and the place.
public struct CollectorConfig: Sendable {
    /// An agent allowed to connect, and the tenants it may send for (nil: any).
    public struct AgentCredential: Sendable, Hashable {
        public var id: String
        public var secret: String
        public var tenants: Set<String>?
        public init(id: String, secret: String, tenants: Set<String>? = nil) {
            self.id = id
            self.secret = secret
            self.tenants = tenants
        }
    }

    /// Bounds on what one connection may send. The defaults are the protocol's (SPEC §7,
    /// ``SessionLimits/standard``), announced in the welcome.
    public struct Limits: Sendable, Hashable {
        public var maxFrameBytes = Int(SessionLimits.standard.maxFrameBody)
        public var maxDecompressedBytes = Int(SessionLimits.standard.maxDecompressedBytes)
        public var maxEventsPerBatch = Int(SessionLimits.standard.maxEventsPerBatch)
        public var maxBatchesInFlight = Int(SessionLimits.standard.window)
        /// A connection with no frame from the agent for this long gets a ping (SPEC §3).
        public var pingAfter: Duration = .seconds(30)
        /// A connection with no frame from the agent for this long is closed: the agent's
        /// unacknowledged batches are resent on its next connection.
        public var idleTimeout: Duration = .seconds(90)
        public init() {}
    }

    public var store = "sqlite:./tally-data/ledger.db"
    /// The store address as logs show it: a PostgreSQL password replaced by `***`.
    public var storeAddressDescription: String {
        (try? StoreAddress(parsing: store).description) ?? "(an unparsable store address)"
    }
    public var listen = HostPort(host: "127.0.0.1", port: 7400)
    public var http = HostPort(host: "127.0.0.1", port: 7480)
    public var pricingFile: String?
    public var agents: [AgentCredential] = []
    /// The key that reads every tenant over HTTP.
    public var adminKey: String?
    /// Tenant-scoped HTTP keys: key -> the one tenant it may read.
    public var tenantKeys: [String: String] = [:]
    /// The grace window, the late policy and the late-arrival limit (events older than it are
    /// rejected `too_old` and kept in the ledger).
    public var lateWindow = LateWindow.standard
    /// How long fingerprints are remembered; never shorter than the late-arrival limit.
    public var dedupeHorizon: Duration = .seconds(35 * 86_400)
    public var eventLimits = EventLimits()
    public var limits = Limits()
    /// TLS on the agent protocol (`tls.listen`); nil: plain TCP.
    public var listenTLS: ServerTLSFiles?
    /// TLS on the HTTP API (`tls.http`); nil: plain HTTP.
    public var httpTLS: ServerTLSFiles?
    /// Plain TCP (agents) and plain HTTP (API reads) from peers not on loopback. Off by default:
    /// such peers are refused, with a log line saying why.
    public var allowPlaintextRemote = false
    /// The real-time priority (`SCHED_RR`) of the event loops, which read the agents' frames
    /// and the API's requests and answer the API's reads (`realtime_priority`, 1–99); 0: the
    /// normal policy. Taken where the system allows it (CAP_SYS_NICE, or systemd's
    /// `LimitRTPRIO=1`); otherwise logged, and the loops keep a short time slice
    /// (``ResponsiveThread``).
    public var realtimePriority: Int32 = 1
    /// Scheduled exports to a billing platform (`exports:`); nil: none.
    public var exports: ExportsConfig?
    /// Usage alert webhooks (`alerts:`); nil: thresholds in the pricing file are not checked.
    public var alerts: AlertsConfig?

    public init() {}

    /// The shortest credential (admin key, tenant API key, agent secret) a collector accepts, in
    /// bytes of UTF-8. Shorter keys are refused on every path: flags, config file, code.
    public static let minimumKeyBytes = 16

    /// Why `key` cannot be a credential, or nil when it can: at least ``minimumKeyBytes`` bytes,
    /// and no whitespace or control characters, so a key is always compared exactly as sent and
    /// nothing is ever trimmed into a match.
    public static func credentialProblem(_ key: String) -> String? {
        if key.isEmpty { return "must not be empty" }
        if key.unicodeScalars.contains(where: { $0.properties.isWhitespace || $0.properties.generalCategory == .control }) {
            return "must not contain spaces or control characters"
        }
        if key.utf8.count < minimumKeyBytes {
            return "is \(key.utf8.count) bytes; a key must have at least \(minimumKeyBytes)"
        }
        return nil
    }

    /// Problems that make the configuration unusable as a whole.
    public func validate() throws(ConfigError) {
        var issues: [ConfigIssue] = []
        if let adminKey, let problem = Self.credentialProblem(adminKey) {
            issues.append(ConfigIssue(place: "admin_key", problem: problem))
        }
        for (key, tenant) in tenantKeys.sorted(by: { $0.value < $1.value }) {
            if let problem = Self.credentialProblem(key) {
                issues.append(ConfigIssue(place: "api_keys", problem: "the key of tenant '\(tenant)' \(problem)"))
            }
            if key == adminKey {
                issues.append(ConfigIssue(place: "api_keys", problem: "the key of tenant '\(tenant)' is the admin key"))
            }
        }
        for agent in agents {
            if agent.id.isEmpty { issues.append(ConfigIssue(place: "agents", problem: "an agent id must not be empty")) }
            if let problem = Self.credentialProblem(agent.secret) {
                issues.append(ConfigIssue(place: "agents", problem: "the secret of agent '\(agent.id)' \(problem)"))
            }
        }
        if dedupeHorizon < lateWindow.lateArrivalLimit {
            issues.append(
                ConfigIssue(
                    place: "dedupe_horizon",
                    problem:
                        "\(DurationText.format(dedupeHorizon)) is shorter than the late-arrival limit \(DurationText.format(lateWindow.lateArrivalLimit)): a retry could be billed twice"
                ))
        }
        do { _ = try StoreAddress(parsing: store) } catch {
            issues.append(ConfigIssue(place: "store", problem: "\(error)"))
        }
        if limits.pingAfter <= .zero || limits.idleTimeout <= limits.pingAfter {
            issues.append(
                ConfigIssue(
                    place: "limits.idle_timeout",
                    problem:
                        "\(DurationText.format(limits.idleTimeout)) must be longer than limits.ping_after \(DurationText.format(limits.pingAfter)), which must be positive"
                ))
        }
        if exports != nil && pricingFile == nil {
            issues.append(ConfigIssue(place: "exports", problem: "needs a pricing file (pricing: or --pricing): it says which metrics exist"))
        }
        if alerts != nil && pricingFile == nil {
            issues.append(
                ConfigIssue(place: "alerts", problem: "needs a pricing file (pricing: or --pricing): its alerts: section holds the thresholds"))
        }
        var seen: Set<String> = []
        for agent in agents where !seen.insert(agent.id).inserted {
            issues.append(ConfigIssue(place: "agents", problem: "agent '\(agent.id)' is configured twice"))
        }
        if !issues.isEmpty { throw ConfigError(file: "<config>", issues: issues) }
    }
}

extension CollectorConfig {
    static let topLevelKeys = [
        "store", "listen", "http", "tls", "allow_plaintext_remote", "pricing", "admin_key", "agents", "api_keys", "late",
        "dedupe_horizon", "limits", "events", "exports", "alerts", "realtime_priority",
    ]

    /// Reads a YAML config file over the defaults.
    public static func load(file path: String) throws(ConfigError) -> CollectorConfig {
        try load(yaml: ConfigDocument.text(ofFile: path), file: path)
    }

    public static func load(yaml: String, file: String = "<string>") throws(ConfigError) -> CollectorConfig {
        var config = CollectorConfig()
        guard case (let fields, var reader)? = try ConfigDocument.topLevel(yaml, file: file, allowed: topLevelKeys) else { return config }
        if let node = fields["store"], let value = reader.text(node, "store") { config.store = value }
        for key in ["listen", "http"] {
            guard let node = fields[key], let value = reader.text(node, key) else { continue }
            do {
                let address = try HostPort(parsing: value, option: key)
                if key == "listen" { config.listen = address } else { config.http = address }
            } catch {
                reader.fail(key, node, error.description)
            }
        }
        if let node = fields["tls"], let tls = reader.mapping(node, "tls", allowed: ["listen", "http"]) {
            if let node = tls["listen"] { config.listenTLS = reader.serverTLS(node, tls.place("listen")) }
            if let node = tls["http"] { config.httpTLS = reader.serverTLS(node, tls.place("http")) }
        }
        if let node = fields["allow_plaintext_remote"], let value = reader.flag(node, "allow_plaintext_remote") {
            config.allowPlaintextRemote = value
        }
        if let node = fields["realtime_priority"], let value = reader.integer(node, "realtime_priority", range: 0...99) {
            config.realtimePriority = Int32(value)
        }
        if let node = fields["pricing"] { config.pricingFile = reader.text(node, "pricing") }
        if let node = fields["admin_key"], let key = reader.text(node, "admin_key") {
            if let problem = credentialProblem(key) { reader.fail("admin_key", node, problem) } else { config.adminKey = key }
        }
        if let node = fields["agents"], let items = reader.list(node, "agents") {
            for (index, item) in items.enumerated() {
                let place = YAMLReader.child("agents", index)
                guard let agent = reader.mapping(item, place, allowed: ["id", "secret", "tenants"]),
                    let idNode = agent.required("id", &reader), let id = reader.text(idNode, agent.place("id")),
                    let secretNode = agent.required("secret", &reader),
                    let secret = reader.text(secretNode, agent.place("secret"))
                else { continue }
                if let problem = credentialProblem(secret) {
                    reader.fail(agent.place("secret"), secretNode, problem)
                    continue
                }
                var tenants: Set<String>?
                if let node = agent["tenants"], let list = reader.texts(node, agent.place("tenants")) { tenants = Set(list) }
                config.agents.append(AgentCredential(id: id, secret: secret, tenants: tenants))
            }
        }
        if let node = fields["api_keys"], let items = reader.list(node, "api_keys") {
            for (index, item) in items.enumerated() {
                let place = YAMLReader.child("api_keys", index)
                guard let entry = reader.mapping(item, place, allowed: ["key", "tenant"]),
                    let keyNode = entry.required("key", &reader), let key = reader.text(keyNode, entry.place("key")),
                    let tenantNode = entry.required("tenant", &reader),
                    let tenant = reader.text(tenantNode, entry.place("tenant"))
                else { continue }
                if let problem = credentialProblem(key) {
                    reader.fail(entry.place("key"), keyNode, problem)
                    continue
                }
                config.tenantKeys[key] = tenant
            }
        }
        if let node = fields["late"], let late = reader.mapping(node, "late", allowed: ["grace", "policy", "max_age"]) {
            if let node = late["grace"], let value = reader.duration(node, late.place("grace")) { config.lateWindow.grace = value }
            if let node = late["max_age"], let value = reader.duration(node, late.place("max_age")) {
                config.lateWindow.lateArrivalLimit = value
            }
            if let node = late["policy"], let value = reader.text(node, late.place("policy")) {
                if let policy = LateWindow.Policy(rawValue: value) {
                    config.lateWindow.policy = policy
                } else {
                    reader.fail(late.place("policy"), node, "'\(value)' must be adjust or reject")
                }
            }
        }
        if let node = fields["dedupe_horizon"], let value = reader.duration(node, "dedupe_horizon") {
            config.dedupeHorizon = value
        }
        if let node = fields["events"],
            let events = reader.mapping(node, "events", allowed: ["max_future_skew", "max_properties"])
        {
            if let node = events["max_future_skew"], let value = reader.duration(node, events.place("max_future_skew")) {
                config.eventLimits.maxFutureSkew = value
                config.lateWindow.maxFutureSkew = value
            }
            if let node = events["max_properties"],
                let value = reader.integer(node, events.place("max_properties"), range: 0...256)
            {
                config.eventLimits.maxProperties = value
            }
        }
        if let node = fields["limits"],
            let limits = reader.mapping(
                node, "limits",
                allowed: ["max_frame_bytes", "max_decompressed_bytes", "max_events_per_batch", "max_batches_in_flight", "ping_after", "idle_timeout"])
        {
            if let node = limits["max_frame_bytes"],
                let value = reader.integer(node, limits.place("max_frame_bytes"), range: 1024...(256 << 20))
            {
                config.limits.maxFrameBytes = value
            }
            if let node = limits["max_decompressed_bytes"],
                let value = reader.integer(node, limits.place("max_decompressed_bytes"), range: 1024...(1 << 30))
            {
                config.limits.maxDecompressedBytes = value
            }
            if let node = limits["max_events_per_batch"],
                let value = reader.integer(node, limits.place("max_events_per_batch"), range: 1...100_000)
            {
                config.limits.maxEventsPerBatch = value
            }
            if let node = limits["max_batches_in_flight"],
                let value = reader.integer(node, limits.place("max_batches_in_flight"), range: 1...1024)
            {
                config.limits.maxBatchesInFlight = value
            }
            if let node = limits["ping_after"], let value = reader.duration(node, limits.place("ping_after")) {
                config.limits.pingAfter = value
            }
            if let node = limits["idle_timeout"], let value = reader.duration(node, limits.place("idle_timeout")) {
                config.limits.idleTimeout = value
            }
        }
        if let node = fields["exports"] { config.exports = readExports(node, &reader) }
        if let node = fields["alerts"] { config.alerts = readAlerts(node, &reader) }
        if !reader.issues.isEmpty { throw ConfigError(file: file, issues: reader.issues) }
        return config
    }

    static func readExports(_ node: YAMLNode, _ reader: inout YAMLReader) -> ExportsConfig? {
        guard
            let fields = reader.mapping(
                node, "exports",
                allowed: [
                    "base_url", "api_key_env", "api_key_file", "every", "meters", "customers", "max_attempts", "request_timeout",
                    "initial_backoff", "max_backoff",
                ]),
            let urlNode = fields.required("base_url", &reader), let url = reader.text(urlNode, fields.place("base_url"))
        else { return nil }
        guard url.hasPrefix("https://") || url.hasPrefix("http://") else {
            reader.fail(fields.place("base_url"), urlNode, "'\(url)' must start with https:// (or http:// for a loopback mock)")
            return nil
        }
        var exports = ExportsConfig(baseURL: url.hasSuffix("/") ? String(url.dropLast()) : url)
        switch (fields["api_key_env"], fields["api_key_file"]) {
        case (let env?, nil): exports.apiKey = reader.text(env, fields.place("api_key_env")).map { .environment($0) }
        case (nil, let file?): exports.apiKey = reader.text(file, fields.place("api_key_file")).map { .file($0) }
        case (_?, _?): reader.fail(fields.place("api_key_file"), fields["api_key_file"], "give api_key_env or api_key_file, not both")
        case (nil, nil): break
        }
        if let node = fields["every"], let value = reader.duration(node, fields.place("every")) {
            if value < .seconds(1) { reader.fail(fields.place("every"), node, "must be at least 1s") } else { exports.every = value }
        }
        if let node = fields["meters"], let value = reader.textMapping(node, fields.place("meters")) { exports.meters = value }
        if let node = fields["customers"], let value = reader.textMapping(node, fields.place("customers")) { exports.customers = value }
        if let node = fields["max_attempts"], let value = reader.integer(node, fields.place("max_attempts"), range: 1...100) {
            exports.maxAttempts = value
        }
        if let node = fields["request_timeout"], let value = reader.duration(node, fields.place("request_timeout")) {
            exports.requestTimeout = value
        }
        if let node = fields["initial_backoff"], let value = reader.duration(node, fields.place("initial_backoff")) {
            exports.initialBackoff = value
        }
        if let node = fields["max_backoff"], let value = reader.duration(node, fields.place("max_backoff")) {
            exports.maxBackoff = value
        }
        return exports
    }

    /// `alerts:` — the webhook URL, the signing secret (`secret_env` or `secret_file`, exactly
    /// one), the check interval and the delivery's timeout and backoff.
    static func readAlerts(_ node: YAMLNode, _ reader: inout YAMLReader) -> AlertsConfig? {
        guard
            let fields = reader.mapping(
                node, "alerts", allowed: ["webhook_url", "secret_env", "secret_file", "every", "request_timeout", "initial_backoff", "max_backoff"]),
            let urlNode = fields.required("webhook_url", &reader), let url = reader.text(urlNode, fields.place("webhook_url"))
        else { return nil }
        guard url.hasPrefix("https://") || url.hasPrefix("http://") else {
            reader.fail(fields.place("webhook_url"), urlNode, "'\(url)' must start with https:// (or http:// for a loopback receiver)")
            return nil
        }
        let secret: ExportsConfig.KeySource?
        switch (fields["secret_env"], fields["secret_file"]) {
        case (let env?, nil): secret = reader.text(env, fields.place("secret_env")).map { .environment($0) }
        case (nil, let file?): secret = reader.text(file, fields.place("secret_file")).map { .file($0) }
        case (_?, _?):
            reader.fail(fields.place("secret_file"), fields["secret_file"], "give secret_env or secret_file, not both")
            secret = nil
        case (nil, nil):
            reader.fail(fields.place("secret_env"), node, "the webhooks are signed: give secret_env or secret_file")
            secret = nil
        }
        guard let secret else { return nil }
        var alerts = AlertsConfig(webhookURL: url, secret: secret)
        if let node = fields["every"], let value = reader.duration(node, fields.place("every")) {
            if value < .milliseconds(100) { reader.fail(fields.place("every"), node, "must be at least 100ms") } else { alerts.every = value }
        }
        if let node = fields["request_timeout"], let value = reader.duration(node, fields.place("request_timeout")) {
            alerts.requestTimeout = value
        }
        if let node = fields["initial_backoff"], let value = reader.duration(node, fields.place("initial_backoff")) {
            alerts.initialBackoff = value
        }
        if let node = fields["max_backoff"], let value = reader.duration(node, fields.place("max_backoff")) {
            alerts.maxBackoff = value
        }
        if alerts.maxBackoff < alerts.initialBackoff {
            reader.fail(fields.place("max_backoff"), fields["max_backoff"], "must not be shorter than initial_backoff")
        }
        return alerts
    }
}
