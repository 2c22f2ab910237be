public import TallyConfig
public import TallyCore
public import TallySpool

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Everything an agent needs to run, with the brief's local defaults: HTTP ingest on
/// 127.0.0.1:7380, spool under `./tally-spool`, shipping to 127.0.0.1:7400.
///
/// Read from YAML (``AgentConfig/load(file:)``), then overridden by flags. Unknown keys and bad
/// values are errors that name the file, the line and the place.
public struct AgentConfig: Sendable {
    /// How events are cut into batches.
    public struct Batching: Sendable, Hashable {
        /// The most events in one batch (the collector's announced limit also applies).
        ///
        /// 4,000: batches fill up only while the agent has a backlog (a restart, a collector away,
        /// a burst); otherwise the agent sends what it has after ``linger``, so ack latency does
        /// not change. With a backlog, a batch's fixed costs are shared by four times as many
        /// events: on the agent its encoding tables, on the collector the batch's statements, its
        /// aggregate log row and the per-tenant sections in it (with 1,000 tenants, a batch of
        /// 1,000 events touches ~630 tenants, one of 4,000 ~980), and on PostgreSQL its commit.
        /// `tally-bench agent --agent-batch-events`, drains into SQLite with the example group-by,
        /// alternating with 1,000: 3M events 194,321 / 189,680 events/s against 147,712 /
        /// 148,742 (collector CPU 7.6-7.8 against 9.8 µs per event, agent 1.4-1.5 against
        /// 2.0-2.2); 10M events 161,988 / 185,390 against 137,714 / 143,056. The price: the
        /// charges reads during a 10M drain had a p99 0.2-0.3 ms higher (1.70 / 1.61 against
        /// 1.37 / 1.44 ms), the faster drain taking more of the shared cores while it lasts.
        /// Larger batches were no faster (6,000: 171,376; 8,000: 143,595 with the byte cap
        /// reached), and a collector prepares about 384 KiB of compressed batches ahead.
        public var maxEvents = 4_000
        /// About the most spool bytes read for one batch.
        public var maxBytes = 1 << 20
        /// How long a partial batch may wait for more events before it is sent.
        public var linger: Duration = .milliseconds(50)
        public init() {}
    }

    /// Reconnect delays: exponential backoff with full jitter.
    public struct Reconnect: Sendable, Hashable {
        public var initial: Duration = .milliseconds(100)
        public var maximum: Duration = .seconds(30)
        /// The delay after an error an operator must fix (bad key, unknown agent, version).
        public var afterFatalError: Duration = .seconds(300)
        public init() {}
    }

    public var spoolDirectory = "./tally-spool"
    public var spool = SpoolOptions()
    /// HTTP ingest; nil turns it off.
    public var listen: HostPort? = HostPort(host: "127.0.0.1", port: 7380)
    /// A Unix socket taking NDJSON streams; nil (the default) turns it off.
    public var socketPath: String?
    /// Every collector the agent may ship to. It starts at the one its agent id picks
    /// (``CollectorRotation``) and on a failure or goaway moves to the next in this order.
    public var collectors: [HostPort] = [HostPort(host: "127.0.0.1", port: 7400)]
    public var agentId: String = AgentConfig.defaultAgentId()
    /// The agent's secret key; nil for open mode (the collector then accepts loopback only).
    public var key: String?
    public var defaultMetric: String?
    /// The largest HTTP request body; larger ones get 413.
    public var maxBodyBytes = 8 << 20
    /// HTTP timeouts, the connection cap and the memory budget of bodies in flight.
    public var http = HTTPLimits()
    public var batching = Batching()
    /// The most batches in flight (the collector's window also applies).
    public var window = 8
    public var reconnect = Reconnect()
    public var eventLimits = EventLimits()
    /// TLS to every collector (`tls`); nil: plain TCP, which is for loopback collectors only.
    public var tls: ClientTLSFiles?
    /// Plain TCP to collectors not on loopback. Off by default: such a connection is closed
    /// before anything is sent, with a log line saying why.
    public var allowPlaintextRemote = false

    public init() {}

    /// The host name, the usual agent id when none is configured.
    public static func defaultAgentId() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "tally-agent" }
        let name = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return name.isEmpty ? "tally-agent" : String(name.prefix(128))
    }

    /// Problems that make the configuration unusable as a whole.
    public func validate() throws(ConfigError) {
        var issues: [ConfigIssue] = []
        if collectors.isEmpty { issues.append(ConfigIssue(place: "collectors", problem: "at least one collector is needed")) }
        if agentId.isEmpty || agentId.utf8.count > 128 || agentId.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) {
            issues.append(ConfigIssue(place: "agent_id", problem: "'\(agentId)' must be 1 to 128 bytes of printable text"))
        }
        if http.maxBodyBytesInFlight < maxBodyBytes {
            issues.append(
                ConfigIssue(
                    place: "http.max_body_bytes_in_flight",
                    problem: "\(http.maxBodyBytesInFlight) is less than max_body_bytes (\(maxBodyBytes)): no full-size body could ever be taken"))
        }
        if listen == nil && socketPath == nil {
            issues.append(ConfigIssue(place: "listen", problem: "neither HTTP ingest nor a socket is configured: the agent could take no events"))
        }
        if !issues.isEmpty { throw ConfigError(file: "<config>", issues: issues) }
    }
}

extension AgentConfig {
    static let topLevelKeys = [
        "agent_id", "key", "listen", "socket", "collectors", "default_metric", "spool", "batch", "window", "reconnect",
        "max_body_bytes", "http", "events", "tls", "allow_plaintext_remote",
    ]

    /// Reads a YAML config file over the defaults.
    public static func load(file path: String) throws(ConfigError) -> AgentConfig {
        try load(yaml: ConfigDocument.text(ofFile: path), file: path)
    }

    // A config file reads top to bottom like the agent's data flow: who, where from, where to.
    public static func load(yaml: String, file: String = "<string>") throws(ConfigError) -> AgentConfig {
        var config = AgentConfig()
        guard case (let fields, var reader)? = try ConfigDocument.topLevel(yaml, file: file, allowed: topLevelKeys) else { return config }
        if let node = fields["agent_id"], let value = reader.text(node, "agent_id") { config.agentId = value }
        if let node = fields["key"], let value = reader.text(node, "key") { config.key = value }
        if let node = fields["default_metric"], let value = reader.text(node, "default_metric") { config.defaultMetric = value }
        if let node = fields["socket"], let value = reader.text(node, "socket") { config.socketPath = value }
        if let node = fields["listen"], let value = reader.text(node, "listen") {
            if value == "off" {
                config.listen = nil
            } else {
                do { config.listen = try HostPort(parsing: value, option: "listen") } catch { reader.fail("listen", node, error.description) }
            }
        }
        if let node = fields["collectors"], let items = reader.texts(node, "collectors") {
            var collectors: [HostPort] = []
            for (index, item) in items.enumerated() {
                do { collectors.append(try HostPort(parsing: item, option: "collectors[\(index)]")) } catch {
                    // The line of the item at fault, not of the list.
                    reader.fail(YAMLReader.child("collectors", index), node.sequence?[index] ?? node, error.description)
                }
            }
            config.collectors = collectors
        }
        if let node = fields["tls"] { config.tls = reader.clientTLS(node, "tls") }
        if let node = fields["allow_plaintext_remote"], let value = reader.flag(node, "allow_plaintext_remote") {
            config.allowPlaintextRemote = value
        }
        if let node = fields["max_body_bytes"], let value = reader.integer(node, "max_body_bytes", range: 1024...(256 << 20)) {
            config.maxBodyBytes = value
        }
        if let node = fields["http"],
            let http = reader.mapping(
                node, "http", allowed: ["header_timeout", "body_timeout", "idle_timeout", "max_connections", "max_body_bytes_in_flight"])
        {
            for (key, path) in [("header_timeout", \HTTPLimits.headerTimeout), ("body_timeout", \.bodyTimeout), ("idle_timeout", \.idleTimeout)] {
                guard let node = http[key], let value = reader.duration(node, http.place(key)) else { continue }
                if value < .milliseconds(100) {
                    reader.fail(http.place(key), node, "must be at least 100ms")
                } else {
                    config.http[keyPath: path] = value
                }
            }
            if let node = http["max_connections"], let value = reader.integer(node, http.place("max_connections"), range: 1...65_536) {
                config.http.maxConnections = value
            }
            if let node = http["max_body_bytes_in_flight"],
                let value = reader.integer(node, http.place("max_body_bytes_in_flight"), range: (1 << 20)...(16 << 30))
            {
                config.http.maxBodyBytesInFlight = value
            }
        }
        if let node = fields["window"], let value = reader.integer(node, "window", range: 1...1024) { config.window = value }
        if let node = fields["spool"],
            let spool = reader.mapping(node, "spool", allowed: ["directory", "max_bytes", "segment_bytes", "fsync", "full_policy", "retry_after"])
        {
            if let node = spool["directory"], let value = reader.text(node, spool.place("directory")) { config.spoolDirectory = value }
            if let node = spool["max_bytes"], let value = reader.integer(node, spool.place("max_bytes"), range: (1 << 20)...Int.max) {
                config.spool.maxSpoolBytes = value
            }
            if let node = spool["segment_bytes"], let value = reader.integer(node, spool.place("segment_bytes"), range: (64 << 10)...(1 << 30)) {
                config.spool.segmentBytes = value
            }
            if let node = spool["retry_after"], let value = reader.duration(node, spool.place("retry_after")) { config.spool.retryAfter = value }
            if let node = spool["fsync"], let value = reader.text(node, spool.place("fsync")) {
                switch value {
                case "always": config.spool.fsync = .always
                case "never": config.spool.fsync = .never
                default:
                    if let interval = try? DurationText.parse(value) {
                        config.spool.fsync = .interval(interval)
                    } else {
                        reader.fail(spool.place("fsync"), node, "'\(value)' must be always, never or an interval such as 5ms")
                    }
                }
            }
            if let node = spool["full_policy"], let value = reader.text(node, spool.place("full_policy")) {
                switch value {
                case "block": config.spool.fullPolicy = .block
                case "reject": config.spool.fullPolicy = .rejectNew
                default: reader.fail(spool.place("full_policy"), node, "'\(value)' must be block (503) or reject (429)")
                }
            }
        }
        if let node = fields["batch"], let batch = reader.mapping(node, "batch", allowed: ["max_events", "max_bytes", "linger"]) {
            if let node = batch["max_events"], let value = reader.integer(node, batch.place("max_events"), range: 1...100_000) {
                config.batching.maxEvents = value
            }
            if let node = batch["max_bytes"], let value = reader.integer(node, batch.place("max_bytes"), range: 1024...(64 << 20)) {
                config.batching.maxBytes = value
            }
            if let node = batch["linger"], let value = reader.duration(node, batch.place("linger")) { config.batching.linger = value }
        }
        if let node = fields["reconnect"], let reconnect = reader.mapping(node, "reconnect", allowed: ["initial", "max", "after_fatal_error"]) {
            if let node = reconnect["initial"], let value = reader.duration(node, reconnect.place("initial")) { config.reconnect.initial = value }
            if let node = reconnect["max"], let value = reader.duration(node, reconnect.place("max")) { config.reconnect.maximum = value }
            if let node = reconnect["after_fatal_error"], let value = reader.duration(node, reconnect.place("after_fatal_error")) {
                config.reconnect.afterFatalError = value
            }
        }
        if let node = fields["events"], let events = reader.mapping(node, "events", allowed: ["max_future_skew", "max_properties"]) {
            if let node = events["max_future_skew"], let value = reader.duration(node, events.place("max_future_skew")) {
                config.eventLimits.maxFutureSkew = value
            }
            if let node = events["max_properties"], let value = reader.integer(node, events.place("max_properties"), range: 0...256) {
                config.eventLimits.maxProperties = value
            }
        }
        if !reader.issues.isEmpty { throw ConfigError(file: file, issues: reader.issues) }
        return config
    }
}
