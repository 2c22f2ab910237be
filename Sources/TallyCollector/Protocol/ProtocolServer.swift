public import Logging
public import NIOCore
import NIOPosix
public import ServiceLifecycle
public import TallyCore
public import TallyWire

/// The agent-facing listener (default 127.0.0.1:7400): one task per connection, each driven by a
/// ``CollectorSession`` state machine. A batch is acked only after its ledger transaction
/// commits; a corrupt frame, a failed handshake or a limit breach gets an error frame with its
/// code, the connection is closed and nothing is written.
public final class ProtocolServer: Service, Sendable {
    /// Everything a connection needs.
    public struct Settings: Sendable {
        public var keyring: AgentKeyring
        public var limits: SessionLimits
        public var eventLimits: EventLimits
        public init(keyring: AgentKeyring, limits: SessionLimits, eventLimits: EventLimits) {
            self.keyring = keyring
            self.limits = limits
            self.eventLimits = eventLimits
        }
    }

    private let listener: NIOAsyncChannel<NIOAsyncChannel<ByteBuffer, ByteBuffer>, Never>
    private let settings: Settings
    private let ledger: LedgerWriter
    private let metrics: CollectorMetrics
    private let logger: Logger

    /// The address actually bound (useful with port 0).
    public var localAddress: SocketAddress? { listener.channel.localAddress }

    private init(
        listener: NIOAsyncChannel<NIOAsyncChannel<ByteBuffer, ByteBuffer>, Never>, settings: Settings,
        ledger: LedgerWriter, metrics: CollectorMetrics, logger: Logger
    ) {
        self.listener = listener
        self.settings = settings
        self.ledger = ledger
        self.metrics = metrics
        self.logger = logger
    }

    /// Binds the listening socket; `run()` then serves it until graceful shutdown.
    public static func bind(
        host: String, port: Int, settings: Settings, ledger: LedgerWriter, metrics: CollectorMetrics, logger: Logger
    ) async throws -> ProtocolServer {
        let listener = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(ChannelOptions.backlog, value: 256)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .bind(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        return ProtocolServer(listener: listener, settings: settings, ledger: ledger, metrics: metrics, logger: logger)
    }

    public func run() async throws {
        if settings.keyring.isOpen {
            logger.warning("no agent keys are configured: accepting unauthenticated agents from loopback only")
        }
        logger.info("listening for agents on \(localAddress?.ipAddress ?? "?"):\(localAddress?.port ?? 0)")
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                try await listener.executeThenClose { connections in
                    for try await connection in connections {
                        group.addTask { await self.serve(connection) }
                    }
                }
            }
        } onGracefulShutdown: {
            self.listener.channel.close(promise: nil)
        }
    }

    /// Serves one agent connection until it closes, fails, or the task is cancelled.
    func serve(_ connection: NIOAsyncChannel<ByteBuffer, ByteBuffer>) async {
        let peer = connection.channel.remoteAddress
        var logger = self.logger
        logger[metadataKey: "peer"] = "\(peer.map(String.init(describing:)) ?? "?")"
        metrics.connectionsTotal.increment()
        metrics.connections.increment()
        defer { metrics.connections.decrement() }
        do {
            // On shutdown, stop reading: a batch being processed still commits and is acked,
            // then the connection closes and the agent reconnects elsewhere or later.
            try await withGracefulShutdownHandler {
            try await connection.executeThenClose { inbound, outbound in
                var handler = try ConnectionHandler(
                    settings: settings, ledger: ledger, metrics: metrics, logger: logger, peerIsLoopback: peer?.isLoopback ?? false)
                if let refusal = handler.refusalForPeer() {
                    try await outbound.write(refusal)
                    return
                }
                for try await chunk in inbound {
                    metrics.bytesIn.increment(by: chunk.readableBytes)
                    let finished = try await handler.received(chunk) { reply in
                        metrics.bytesOut.increment(by: reply.readableBytes)
                        try await outbound.write(reply)
                    }
                    if finished { return }
                }
            }
            } onGracefulShutdown: {
                let channel = connection.channel
                let stopReading = channel.eventLoop.makePromise(of: Void.self)
                stopReading.futureResult.whenFailure { _ in channel.close(promise: nil) }
                channel.close(mode: .input, promise: stopReading)
            }
        } catch {
            logger.debug("connection ended", metadata: ["error": "\(error)"])
        }
    }
}

extension SocketAddress {
    /// Whether the peer is on this machine (127.0.0.0/8, ::1, or a Unix socket).
    var isLoopback: Bool {
        switch self {
        case .v4(let address):
            return (UInt32(bigEndian: address.address.sin_addr.s_addr) >> 24) == 127
        case .v6:
            return ipAddress == "::1" || (ipAddress?.hasPrefix("::ffff:127.") ?? false)
        case .unixDomainSocket:
            return true
        }
    }
}
