public import Hummingbird
public import Logging
import NIOCore
import NIOPosix
public import Prometheus
public import ServiceLifecycle
public import TallyCore
public import TallyLedger
import TallyWire

/// A running collector: the ledger, the agent listener and the HTTP API, as services of one
/// `ServiceGroup` that shuts down gracefully on SIGTERM or SIGINT (the listener stops taking
/// connections, in-flight batches finish, the ledger closes last).
public struct Collector {
    public let config: CollectorConfig
    public let ledger: LedgerWriter
    public let protocolServer: ProtocolServer
    public let registry: PrometheusCollectorRegistry
    private let logger: Logger

    /// Opens the store and binds the agent port; `run()` serves until shutdown.
    public static func start(config: CollectorConfig, registry: PrometheusCollectorRegistry, logger: Logger) async throws
        -> Collector
    {
        try config.validate()
        let store = try openStore(config)
        let ledger = LedgerWriter(store: store)
        let metrics = CollectorMetrics()
        var keys: [String: AgentKey] = [:]
        for agent in config.agents {
            keys[agent.id] = AgentKey(secret: Array(agent.secret.utf8), allowedTenants: agent.tenants)
        }
        let limits = SessionLimits(
            maxFrameBody: UInt32(config.limits.maxFrameBytes), maxDecompressedBytes: UInt32(config.limits.maxDecompressedBytes),
            maxEventsPerBatch: UInt32(config.limits.maxEventsPerBatch), window: UInt16(config.limits.maxBatchesInFlight))
        let eventLimits = config.eventLimits
        let server = try await ProtocolServer.bind(
            host: config.listen.host, port: config.listen.port,
            settings: .init(keyring: AgentKeyring(keys: keys), limits: limits, eventLimits: eventLimits),
            ledger: ledger, metrics: metrics, logger: logger)
        return Collector(config: config, ledger: ledger, protocolServer: server, registry: registry, logger: logger)
    }

    static func openStore(_ config: CollectorConfig) throws -> any LedgerStore {
        guard config.store.hasPrefix("sqlite:") else {
            throw CollectorStartError("the store '\(config.store)' is not supported yet: use sqlite:PATH")
        }
        let path = String(config.store.dropFirst("sqlite:".count))
        try makeParentDirectory(of: path)
        return try SQLiteLedgerStore(path: path, configuration: config.ledgerConfiguration)
    }

    /// Serves until SIGTERM/SIGINT.
    public func run() async throws {
        let router = CollectorHTTP.router(registry: registry, ready: { true })
        let logger = self.logger
        let http = Application(
            router: router,
            configuration: .init(address: .hostname(config.http.host, port: config.http.port), serverName: "tally-collector"),
            onServerRunning: { channel in
                logger.info("serving HTTP", metadata: ["address": "\(channel.localAddress.map(String.init(describing:)) ?? "?")"])
            },
            logger: logger)
        let group = ServiceGroup(
            configuration: .init(
                services: [
                    .init(service: protocolServer, successTerminationBehavior: .gracefullyShutdownGroup),
                    .init(service: http, successTerminationBehavior: .gracefullyShutdownGroup),
                ],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger))
        do {
            try await group.run()
        } catch {
            await ledger.shutdown()
            throw error
        }
        await ledger.shutdown()
    }
}

/// Why the collector could not start.
public struct CollectorStartError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

extension CollectorConfig {
    /// The ledger's settings from this config.
    public var ledgerConfiguration: LedgerConfiguration {
        LedgerConfiguration(lateWindow: lateWindow, dedupeHorizon: dedupeHorizon)
    }
}

#if canImport(Glibc)
import Glibc
#endif

/// Creates the folders above `path`, like `mkdir -p $(dirname path)`.
func makeParentDirectory(of path: String) throws {
    var components = path.split(separator: "/", omittingEmptySubsequences: false).dropLast()
    guard !components.isEmpty else { return }
    var current = path.hasPrefix("/") ? "" : "."
    if path.hasPrefix("/") { components = components.dropFirst() }
    for component in components where !component.isEmpty && component != "." {
        current += "/" + component
        if mkdir(current, 0o755) != 0 && errno != EEXIST {
            throw CollectorStartError("cannot create \(current): \(String(cString: strerror(errno)))")
        }
    }
}
