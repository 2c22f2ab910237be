public import Logging
public import ServiceLifecycle
import TallyCore
public import TallySpool

/// One running agent: the spool, the ingest endpoints and the shipper, as services for a
/// `ServiceGroup`. ``Agent/open(config:metrics:logger:)`` opens (and recovers) the spool;
/// ``Agent/run()`` serves until SIGTERM/SIGINT (or cancellation), then closes the spool, which
/// finishes queued appends and fsyncs.
public struct Agent: Sendable {
    public let config: AgentConfig
    public let spool: Spool
    public let metrics: AgentMetrics
    public let shipper: Shipper
    public let ingest: EventIngest
    public let logger: Logger

    public static func open(
        config: AgentConfig, metrics: AgentMetrics = AgentMetrics(), logger: Logger,
        spoolFileOperations: any SpoolFileOperations = PosixFileOperations()
    ) async throws -> Agent {
        try config.validate()
        let spool = try await Spool.open(directory: config.spoolDirectory, options: config.spool, fileOperations: spoolFileOperations)
        let recovery = spool.recovery
        try await spool.observeSyncs { [metrics] nanoseconds in metrics.fsyncLatency.recordNanoseconds(nanoseconds) }
        if !recovery.missingSegments.isEmpty {
            logger.error(
                "spool segments are missing or emptied: their unacknowledged events were lost outside the agent (recorded in the quarantine; see tallyctl spool verify)",
                metadata: ["segments": "\(recovery.missingSegments)"])
        }
        if recovery.problems.isEmpty && !recovery.checkpointFound && recovery.recordsFound == 0 {
            // No checkpoint and no event: a new spool (or one with nothing to send), not a repair.
            logger.info("spool created", metadata: ["directory": "\(config.spoolDirectory)"])
        } else if !recovery.problems.isEmpty || !recovery.checkpointFound {
            logger.warning(
                "spool recovered with repairs",
                metadata: ["problems": "\(recovery.problems.count)", "checkpointFound": "\(recovery.checkpointFound)"])
        }
        let shipper = Shipper(spool: spool, settings: try Shipper.Settings(config), metrics: metrics, logger: logger)
        let ingest = EventIngest(
            spool: spool, decoder: EventDecoder(defaultMetric: config.defaultMetric, limits: config.eventLimits), metrics: metrics,
            appended: { [shipper] in shipper.spoolAppended() })
        if config.key == nil {
            logger.notice("no agent key configured: open mode (collectors accept this agent from loopback only)")
        }
        return Agent(config: config, spool: spool, metrics: metrics, shipper: shipper, ingest: ingest, logger: logger)
    }

    /// The services, in start order; the group stops them in reverse (ingest first, shipper last).
    /// `httpBound` gets the HTTP port once it listens; `socketBound` is called once the Unix
    /// socket listens.
    public func services(
        httpBound: @escaping @Sendable (Int) -> Void = { _ in }, socketBound: @escaping @Sendable () -> Void = {}
    ) -> [any Service] {
        var services: [any Service] = [shipper]
        let health = AgentHealth(spool: spool, shipper: shipper.status, metrics: metrics)
        if let listen = config.listen {
            services.append(
                HTTPIngestServer(
                    address: listen, ingest: ingest, maxBodyBytes: config.maxBodyBytes, limits: config.http, health: health, logger: logger,
                    onBound: httpBound))
        }
        if let path = config.socketPath {
            services.append(SocketIngestServer(path: path, ingest: ingest, logger: logger, onBound: socketBound))
        }
        return services
    }

    /// Runs until a signal (SIGTERM/SIGINT) or cancellation; then closes the spool.
    public func run(httpBound: @escaping @Sendable (Int) -> Void = { _ in }) async throws {
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: services(httpBound: httpBound).map { ServiceGroupConfiguration.ServiceConfiguration(service: $0) },
                gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        do {
            try await group.run()
        } catch {
            await spool.close()
            throw error
        }
        await spool.close()
        logger.info("agent stopped; spool closed and fsynced")
    }
}
