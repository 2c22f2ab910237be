public import ArgumentParser
public import TallyCollector
import TallyConfig
import TallyLedger

/// `tally-collector`: receives batches from agents, keeps the ledger, prices usage.
public struct CollectorCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "tally-collector",
        abstract: "Receive usage batches from agents, keep the audit ledger, aggregate and price usage.",
        discussion: """
            With no flags it stores into sqlite:./tally-data/ledger.db, takes agents on 127.0.0.1:7400 \
            and serves HTTP on 127.0.0.1:7480. Flags override the config file.
            """,
        version: tallyVersion,
        subcommands: [Run.self],
        defaultSubcommand: Run.self
    )

    public init() {}

    /// Runs the collector (the default subcommand).
    public struct Run: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(abstract: "Run the collector (the default).")

        @OptionGroup public var global: GlobalOptions
        @Option(help: "A YAML config file.") public var config: String?
        @Option(help: "The store: sqlite:PATH or a postgres:// URL (default sqlite:./tally-data/ledger.db).")
        public var store: String?
        @Option(help: "Agent protocol address, HOST:PORT (default 127.0.0.1:7400).") public var listen: String?
        @Option(help: "HTTP API address, HOST:PORT (default 127.0.0.1:7480).") public var http: String?
        @Option(help: "The pricing YAML file.") public var pricing: String?
        @Option(help: "An agent's key, ID=SECRET (repeatable); the secret has at least 16 bytes and no spaces.")
        public var agentKey: [String] = []
        @Option(help: "The admin API key: at least 16 bytes, no spaces.") public var adminKey: String?
        @Option(help: "TLS certificate chain (PEM) for the agent port and the HTTP API; with --tls-private-key.")
        public var tlsCertificate: String?
        @Option(help: "TLS private key (PEM) for --tls-certificate.") public var tlsPrivateKey: String?
        @Option(help: "CA (PEM) that agents' client certificates must chain to; the certificate names the agent id.")
        public var tlsClientCa: String?
        @Flag(help: "Allow plain TCP agents and plain HTTP reads from peers not on loopback (clear text on the network).")
        public var allowPlaintextRemote = false

        public init() {}

        public func validate() throws {
            if let listen { try checkAddress(listen, "--listen") }
            if let http { try checkAddress(http, "--http") }
            if let store {
                do { _ = try StoreAddress(parsing: store) } catch { throw ValidationError("--store: \(error)") }
            }
            if (tlsCertificate == nil) != (tlsPrivateKey == nil) {
                throw ValidationError("--tls-certificate and --tls-private-key go together")
            }
            if tlsClientCa != nil && tlsCertificate == nil {
                throw ValidationError("--tls-client-ca needs --tls-certificate and --tls-private-key (client certificates are a TLS feature)")
            }
            for entry in agentKey {
                let parts = entry.split(separator: "=", maxSplits: 1)
                guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
                    throw ValidationError("--agent-key for '\(parts.first ?? "")' must be ID=SECRET")
                }
                if let problem = CollectorConfig.credentialProblem(String(parts[1])) {
                    throw ValidationError("--agent-key: the secret of agent '\(parts[0])' \(problem)")
                }
            }
            if let adminKey, let problem = CollectorConfig.credentialProblem(adminKey) {
                throw ValidationError("--admin-key \(problem)")
            }
        }

        /// The config file (if any) with the flags applied over it.
        public func resolvedConfig() throws -> CollectorConfig {
            var resolved = try config.map { try CollectorConfig.load(file: $0) } ?? CollectorConfig()
            if let store { resolved.store = store }
            if let listen { resolved.listen = try HostPort(parsing: listen, option: "--listen") }
            if let http { resolved.http = try HostPort(parsing: http, option: "--http") }
            if let pricing { resolved.pricingFile = pricing }
            if let adminKey { resolved.adminKey = adminKey }
            if let tlsCertificate, let tlsPrivateKey {
                resolved.listenTLS = ServerTLSFiles(certificate: tlsCertificate, privateKey: tlsPrivateKey, clientCA: tlsClientCa)
                resolved.httpTLS = ServerTLSFiles(certificate: tlsCertificate, privateKey: tlsPrivateKey)
            }
            if allowPlaintextRemote { resolved.allowPlaintextRemote = true }
            for entry in agentKey {
                let parts = entry.split(separator: "=", maxSplits: 1).map(String.init)
                resolved.agents.removeAll { $0.id == parts[0] }
                resolved.agents.append(.init(id: parts[0], secret: parts[1]))
            }
            try resolved.validate()
            return resolved
        }

        public func run() async throws {
            let config = try resolvedConfig()
            let (logger, registry) = Observability.bootstrap(label: "tally-collector", level: global.logLevel)
            let collector = try await Collector.start(config: config, registry: registry, logger: logger)
            try await collector.run()
        }
    }
}
