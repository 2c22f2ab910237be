import Hummingbird
import HummingbirdCore
import HummingbirdTLS
public import Logging
import NIOCore
import NIOPosix
public import Prometheus
import ServiceLifecycle
import TallyCore
public import TallyLedger
import TallyPricing
public import TallyTLS
import TallyWire

/// A running collector: the ledger, the agent listener and the HTTP API, as services of one
/// `ServiceGroup` that shuts down gracefully on SIGTERM or SIGINT (the listener stops taking
/// connections, in-flight batches finish, the ledger closes last).
public struct Collector {
    public let config: CollectorConfig
    public let ledger: Ledger
    public let protocolServer: ProtocolServer
    public let registry: PrometheusCollectorRegistry
    /// The pricing config (`--pricing`), read from the aggregates; nil when none is configured.
    public let pricing: AggregatePricing?
    /// TLS of the HTTP API (`tls.http`), read at start; nil: plain HTTP.
    public let httpTLS: ServerTLS?
    private let logger: Logger

    /// Opens the store and binds the agent port; `run()` serves until shutdown.
    public static func start(
        config: CollectorConfig, registry: PrometheusCollectorRegistry, logger: Logger
    ) async throws
        -> Collector
    {
        try config.validate()
        // TLS files are read before anything opens, so a bad one stops the start with its name.
        let listenTLS = try config.listenTLS.map { files throws(TLSSetupError) in try ServerTLS(files, place: "tls.listen") }
        let httpTLS = try config.httpTLS.map { files throws(TLSSetupError) in try ServerTLS(files, place: "tls.http") }
        let pricing = try config.pricingFile.map { AggregatePricing(config: try PricingConfigLoader.load(file: $0)) }
        let store = try openStore(config, pricing: pricing)
        // PostgreSQL: `pool_size` writers, each its own connection, commit at once. SQLite: one.
        var writers = [store]
        if case .postgres(let address) = try? StoreAddress(parsing: config.store) {
            for _ in 1..<address.poolSize { writers.append(try openStore(config, pricing: pricing)) }
        }
        // Connections of their own for the HTTP API's reads, opened after the writer so the schema
        // is in place. SQLite: two (one per core; WAL readers never wait for the writer, and they
        // merge the unfolded aggregate log instead of folding), so two dashboards polling at once
        // both stay off the writer. PostgreSQL: one, on its own thread.
        let readerCount = writers.count > 1 || store.readsWaitOnNetwork ? 1 : 2
        let readers = try (0..<readerCount).map { _ in try openStore(config, pricing: pricing) }
        let ledger = Ledger(stores: writers, readers: readers)
        logger.info("ledger open", metadata: ["store": "\(config.storeAddressDescription)", "writers": "\(writers.count)"])
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
            settings: .init(
                keyring: AgentKeyring(keys: keys), limits: limits, eventLimits: eventLimits, pingAfter: config.limits.pingAfter,
                idleTimeout: config.limits.idleTimeout, tls: listenTLS, allowPlaintextRemote: config.allowPlaintextRemote),
            ledger: ledger, metrics: metrics, logger: logger)
        return Collector(
            config: config, ledger: ledger, protocolServer: server, registry: registry, pricing: pricing, httpTLS: httpTLS,
            logger: logger)
    }

    static func openStore(_ config: CollectorConfig, pricing: AggregatePricing? = nil) throws -> any LedgerStore {
        let address: StoreAddress
        do { address = try StoreAddress(parsing: config.store) } catch { throw CollectorStartError("\(error)", cause: error) }
        if case .sqlite(let path) = address {
            try makeParentDirectory(of: path)
            try checkWritable(ledger: path)
        }
        do {
            return try LedgerStores.open(address, configuration: config.ledgerConfiguration(pricing: pricing))
        } catch {
            throw CollectorStartError("cannot open the ledger \(address): \(error)", cause: error)
        }
    }

    /// Puts every event loop of the process on `SCHED_RR` at `realtime` (0: not asked), else on
    /// a short slice, and says once which it got.
    static func prioritiseEventLoops(realtime: Int32, logger: Logger) async {
        var refusal: Int32?
        var slices = 0
        for loop in MultiThreadedEventLoopGroup.singleton.makeIterator() {
            let outcome = try? await loop.submit { () -> (refused: Int32?, slice: Bool) in
                var refused: Int32?
                if realtime > 0 {
                    refused = ResponsiveThread.makeRealtime(priority: realtime)
                    if refused == nil { return (nil, false) }
                }
                return (refused, ResponsiveThread.shortenSlice())
            }.get()
            refusal = refusal ?? outcome?.refused
            if outcome?.slice == true { slices += 1 }
        }
        if realtime > 0, refusal == nil {
            logger.info("the event loops run on the real-time policy (SCHED_RR \(realtime)): ingest's threads do not preempt the API's reads")
        } else if let refused = refusal {
            logger.notice(
                "the event loops run on the normal policy: real-time priority \(realtime) was refused (\(String(cString: strerror(refused)))); allow it with LimitRTPRIO=\(realtime) (systemd) or CAP_SYS_NICE, or set realtime_priority: 0",
                metadata: ["short_slice": "\(slices > 0)"])
        } else if slices == 0 {
            logger.debug("this kernel keeps its default time slice for the event loops (sched_setattr refused)")
        }
    }

    /// Serves until SIGTERM/SIGINT (or cancellation); `httpBound` gets the HTTP API's port.
    public func run(httpBound: @escaping @Sendable (Int) -> Void = { _ in }) async throws {
        let logger = self.logger
        // The event loops read the agents' frames and the API's requests, and answer the API's
        // reads themselves (DirectReads): on the real-time policy where the system allows it, so
        // that no thread of the drain preempts a read; else with a short time slice, so that a
        // request waits for a core as little as the fair scheduler allows (ResponsiveThread).
        await Self.prioritiseEventLoops(realtime: config.realtimePriority, logger: logger)
        let access = APIAccess(adminKey: config.adminKey, tenantKeys: config.tenantKeys)
        if access.allowsLoopbackWithoutKey {
            logger.warning("no admin key configured: the HTTP API answers keyless reads from loopback only")
        }
        let service = Invoicing(ledger: ledger, pricing: pricing, lateWindow: config.lateWindow)
        // An embedded ledger's filesystem is read at each scrape; PostgreSQL's disk is the server's.
        var ledgerDisk: LedgerFilesystemGauges?
        if case .sqlite(let path) = try? StoreAddress(parsing: config.store) { ledgerDisk = LedgerFilesystemGauges(ledgerPath: path) }
        let api = CollectorAPI(service: service, access: access)
        let refusePlaintextRemote = httpTLS == nil && !config.allowPlaintextRemote
        let requestMetrics = HTTPRequestMetrics<TallyRequestContext>()
        let router = CollectorHTTP.router(
            registry: registry, readiness: { [ledger] in ledger.readiness() }, api: api, refusePlaintextRemote: refusePlaintextRemote,
            requestMetrics: requestMetrics, beforeScrape: { [ledgerDisk, ledger] in ledgerDisk?.refresh(checkpoints: ledger.walCheckpoints) })
        let serverName = "tally-collector"
        let directReads = DirectReads.Reader(api: api, metrics: requestMetrics, loopbackOnly: refusePlaintextRemote, serverName: serverName)
        let server: HTTPServerBuilder =
            try httpTLS.map {
                try HTTPServerBuilder.tls(KeptHTTP1Channel.builder(directReads: directReads), tlsConfiguration: $0.configuration)
            } ?? KeptHTTP1Channel.builder(directReads: directReads)
        if httpTLS == nil {
            logger.info(
                config.allowPlaintextRemote
                    ? "the HTTP API is plain HTTP, remote peers allowed (allow_plaintext_remote)"
                    : "the HTTP API is plain HTTP: API reads from loopback only (configure tls.http for remote readers)")
        }
        let secure = httpTLS != nil
        let http = Application(
            router: router,
            server: server,
            configuration: .init(address: .hostname(config.http.host, port: config.http.port), serverName: serverName),
            onServerRunning: { channel in
                logger.info(
                    secure ? "serving HTTPS" : "serving HTTP",
                    metadata: ["address": "\(channel.localAddress.map(String.init(describing:)) ?? "?")"])
                httpBound(channel.localAddress?.port ?? 0)
            },
            logger: logger)
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [
            .init(service: protocolServer, successTerminationBehavior: .gracefullyShutdownGroup),
            .init(service: http, successTerminationBehavior: .gracefullyShutdownGroup),
            .init(service: InvoiceFreezer(service: service, logger: logger)),
            .init(service: LedgerUpkeep(ledger: ledger, logger: logger)),
        ]
        if let exports = config.exports {
            // The key is read here, once, and never logged.
            let key = try exports.resolveAPIKey()
            let exporter = MeterEventExporter(
                service: service, settings: exports.settings(apiKey: key, allowPlaintextRemote: config.allowPlaintextRemote))
            services.append(.init(service: ScheduledExports(exporter: exporter, every: exports.every, logger: logger)))
            logger.info(
                "exporting usage on a schedule",
                metadata: ["to": "\(exports.baseURL)", "every": "\(DurationText.format(exports.every))"])
        }
        if let alerts = config.alerts {
            // The secret is read here, once, and never logged.
            let secret = try alerts.resolveSecret()
            let alerter = UsageAlerter(service: service, settings: alerts, secret: secret, allowPlaintextRemote: config.allowPlaintextRemote)
            services.append(.init(service: UsageAlerts(alerter: alerter, logger: logger)))
            logger.info(
                "checking usage alerts",
                metadata: [
                    "to": "\(alerts.webhookURL)", "every": "\(DurationText.format(alerts.every))",
                    "thresholds": "\(service.pricing?.config.alerts.count ?? 0)",
                ])
        }
        let group = ServiceGroup(
            configuration: .init(
                services: services,
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

/// Why the collector could not start: one line that says what is wrong and where, and the error
/// underneath when there is one.
public struct CollectorStartError: Error, CustomStringConvertible {
    public let description: String
    public let cause: (any Error)?
    public init(_ description: String, cause: (any Error)? = nil) {
        self.description = description
        self.cause = cause
    }
}

extension CollectorConfig {
    /// The ledger's settings from this config; the pricing config adds the group-by properties
    /// and unique counts its charges need from the aggregates.
    public var ledgerConfiguration: LedgerConfiguration { ledgerConfiguration(pricing: nil) }

    /// The ledger's settings with what `pricing` needs aggregated.
    public func ledgerConfiguration(pricing: AggregatePricing?) -> LedgerConfiguration {
        let base = LedgerConfiguration(lateWindow: lateWindow, dedupeHorizon: dedupeHorizon)
        return pricing.map { AggregatePricing.ledgerConfiguration(for: $0.config, base: base) } ?? base
    }
}

#if canImport(Glibc)
import Glibc
#endif

/// Refuses, before SQLite gets to it, a ledger the collector could not write: its directory
/// (where SQLite creates the `-wal` and `-shm` files) and any of its files that exist must be
/// writable by this process. SQLite would otherwise open a read-only file read-only without a
/// word and fail at the first commit, or fail with "unable to open database file".
func checkWritable(ledger path: String) throws(CollectorStartError) {
    let directory = LedgerFilesystemGauges.directory(containing: path)
    if access(directory, W_OK | X_OK) != 0 {
        throw CollectorStartError(
            "the ledger directory \(directory) is not writable (\(String(cString: strerror(errno)))): the collector keeps \(path) there")
    }
    for file in [path, path + "-wal", path + "-shm"] where access(file, F_OK) == 0 {
        if access(file, R_OK | W_OK) != 0 {
            throw CollectorStartError("the ledger file \(file) is not writable (\(String(cString: strerror(errno))))")
        }
    }
}

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
