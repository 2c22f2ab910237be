public import ArgumentParser
import Logging
import Metrics
import Prometheus
public import TallyAgent
public import TallyConfig
public import TallyService
import TallySpool
import TallyTLS

/// `tally-agent`: the sidecar that takes usage events on localhost, spools them durably and
/// ships them to a collector.
public struct AgentCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "tally-agent",
        abstract: "Take usage events on localhost, spool them durably, ship them to a Tally collector.",
        discussion: """
            With no flags it listens on 127.0.0.1:7380 (HTTP), spools under ./tally-spool and ships \
            to 127.0.0.1:7400.
            """,
        version: tallyVersion,
        subcommands: [Run.self],
        defaultSubcommand: Run.self
    )

    public init() {}

    /// Runs the agent (the default subcommand).
    public struct Run: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(abstract: "Run the agent (the default).")

        @OptionGroup public var global: GlobalOptions
        @Option(help: "A YAML config file.") public var config: String?
        @Option(help: "The spool directory (default ./tally-spool).") public var spool: String?
        @Option(help: "HTTP ingest address, HOST:PORT (default 127.0.0.1:7380).") public var listen: String?
        @Option(help: "A Unix socket for NDJSON streams.") public var socket: String?
        @Option(
            help: ArgumentHelp(
                "A collector, HOST:PORT (repeatable; default 127.0.0.1:7400).",
                discussion: "The agent starts at the collector its agent id picks (a hash of the id modulo the number of "
                    + "collectors, so a fleet listing the same collectors spreads evenly) and, when that one fails or sends "
                    + "goaway, moves to the next in the order given, wrapping, resending every unacknowledged batch."))
        public var collector: [String] = []
        @Option(help: "This agent's id (default: the host name).") public var agentId: String?
        @Option(help: "This agent's secret key (none: open mode, loopback collectors only).") public var key: String?
        @Option(help: "The metric of events that name none.") public var defaultMetric: String?
        @OptionGroup public var transport: CollectorTransportOptions

        public init() {}

        public func validate() throws {
            if let listen { try checkAddress(listen, "--listen") }
            for address in collector { try checkAddress(address, "--collector") }
        }

        /// The config file (if any) with the flags applied over it.
        public func agentConfig() throws -> AgentConfig {
            var config = AgentConfig()
            if let path = self.config {
                do { config = try AgentConfig.load(file: path) } catch { throw ValidationError(error.description) }
            }
            if let spool { config.spoolDirectory = spool }
            if let listen { config.listen = try HostPort(parsing: listen, option: "--listen") }
            if let socket { config.socketPath = socket }
            if !collector.isEmpty { config.collectors = try collector.map { try HostPort(parsing: $0, option: "--collector") } }
            if let agentId { config.agentId = agentId }
            if let key { config.key = key }
            if let defaultMetric { config.defaultMetric = defaultMetric }
            config.tls = transport.tls(over: config.tls)
            if transport.allowPlaintextRemote { config.allowPlaintextRemote = true }
            do { try config.validate() } catch { throw ValidationError(error.description) }
            return config
        }

        public func run() async throws {
            let config = try agentConfig()
            let (logger, registry) = Observability.bootstrap(label: "tally-agent", level: global.logLevel)
            let agent: Agent
            do {
                agent = try await Agent.open(config: config, metrics: AgentMetrics(registry: registry), logger: logger)
            } catch let error as SpoolError {
                throw RuntimeFailure("cannot open the spool: \(error)")
            } catch let error as TLSSetupError {
                throw RuntimeFailure("cannot set up TLS: \(error)")
            }
            logger.info(
                "tally-agent \(tallyVersion) starting",
                metadata: [
                    "agent": "\(config.agentId)", "spool": "\(config.spoolDirectory)",
                    "collectors": "\(config.collectors.map(\.description).joined(separator: ","))",
                ])
            try await agent.run()
        }
    }
}

/// How the agent (and `tallyctl spool drain`) reach collectors: TLS files and the plain-TCP
/// rule. Flags win over the config file's `tls` block key by key.
public struct CollectorTransportOptions: ParsableArguments {
    @Option(help: "Connect to collectors over TLS, trusting this CA (PEM).") public var tlsCa: String?
    @Option(help: "The name the collector's certificate must carry (default: the collector's host).")
    public var tlsServerName: String?
    @Option(help: "A client certificate (PEM) naming this agent id; with --tls-private-key.") public var tlsCertificate: String?
    @Option(help: "The private key (PEM) of --tls-certificate.") public var tlsPrivateKey: String?
    @Flag(help: "Allow plain TCP to collectors not on loopback (usage crosses the network in clear text).")
    public var allowPlaintextRemote = false

    public init() {}

    public func validate() throws {
        if (tlsCertificate == nil) != (tlsPrivateKey == nil) {
            throw ValidationError("--tls-certificate and --tls-private-key go together")
        }
    }

    /// `base` (from a config file, if any) with the flags applied; nil when neither asks for TLS.
    public func tls(over base: ClientTLSFiles?) -> ClientTLSFiles? {
        guard tlsCa != nil || tlsServerName != nil || tlsCertificate != nil else { return base }
        var tls = base ?? ClientTLSFiles()
        if let tlsCa { tls.ca = tlsCa }
        if let tlsServerName { tls.serverName = tlsServerName }
        if let tlsCertificate, let tlsPrivateKey {
            tls.certificate = tlsCertificate
            tls.privateKey = tlsPrivateKey
        }
        return tls
    }
}
