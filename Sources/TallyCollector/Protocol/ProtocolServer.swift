public import Logging
public import NIOCore
import NIOPosix
import NIOSSL
public import ServiceLifecycle
import Synchronization
public import TallyCore
public import TallyTLS
public import TallyWire

/// The agent-facing listener (default 127.0.0.1:7400): one task per connection, each driven by a
/// ``CollectorSession`` state machine. A batch is acked only after its ledger transaction
/// commits; a corrupt frame, a failed handshake or a limit breach gets an error frame with its
/// code, the connection is closed and nothing is written.
///
/// Liveness (SPEC §3, §8): a connection that has sent nothing for `pingAfter` gets a ping, and one
/// silent for `idleTimeout` is closed (a half-open connection must not hold an agent's window).
/// On graceful shutdown every connection gets a `goaway(shutting_down)`: the batch being
/// processed is still committed and acked, later batches are dropped unacknowledged (the agent
/// resends them), and the connection closes once it has stopped reading.
///
/// Transport (SPEC §4.1): with ``Settings/tls`` every connection is TLS (a plain client fails the
/// TLS handshake and nothing is read from it); with client certificates the hello's agent id must
/// be a name of the agent's certificate. Without TLS, peers not on loopback are refused unless
/// ``Settings/allowPlaintextRemote`` is set.
public final class ProtocolServer: Service, Sendable {
    /// Everything a connection needs.
    public struct Settings: Sendable {
        public var keyring: AgentKeyring
        public var limits: SessionLimits
        public var eventLimits: EventLimits
        public var pingAfter: Duration
        public var idleTimeout: Duration
        /// The `retry_after_ms` of the shutdown goaway.
        public var goawayRetryAfter: Duration
        /// TLS on every connection; nil: plain TCP.
        public var tls: ServerTLS?
        /// Plain TCP from peers not on loopback (never the default).
        public var allowPlaintextRemote: Bool
        public init(
            keyring: AgentKeyring, limits: SessionLimits, eventLimits: EventLimits, pingAfter: Duration = .seconds(30),
            idleTimeout: Duration = .seconds(90), goawayRetryAfter: Duration = .seconds(1), tls: ServerTLS? = nil,
            allowPlaintextRemote: Bool = false
        ) {
            self.tls = tls
            self.allowPlaintextRemote = allowPlaintextRemote
            self.keyring = keyring
            self.limits = limits
            self.eventLimits = eventLimits
            self.pingAfter = pingAfter
            self.idleTimeout = idleTimeout
            self.goawayRetryAfter = goawayRetryAfter
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
        let tls = settings.tls
        let listener = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(ChannelOptions.backlog, value: 256)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .bind(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls.context)) }
                    return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        return ProtocolServer(listener: listener, settings: settings, ledger: ledger, metrics: metrics, logger: logger)
    }

    public func run() async throws {
        if settings.keyring.isOpen {
            logger.warning("no agent keys are configured: accepting unauthenticated agents from loopback only")
        }
        let transport =
            switch (settings.tls, settings.allowPlaintextRemote) {
            case (.some(let tls), _): tls.requiresClientCertificate ? "TLS with client certificates" : "TLS"
            case (nil, false): "plain TCP, loopback peers only"
            case (nil, true): "plain TCP, remote peers allowed (allow_plaintext_remote)"
            }
        if settings.tls == nil, settings.allowPlaintextRemote {
            logger.warning("plain TCP from remote agents is allowed: their usage crosses the network in clear text")
        }
        logger.info("listening for agents on \(localAddress?.ipAddress ?? "?"):\(localAddress?.port ?? 0) (\(transport))")
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
        var peerLogger = self.logger
        peerLogger[metadataKey: "peer"] = "\(peer.map(String.init(describing:)) ?? "?")"
        let logger = peerLogger
        metrics.connectionsTotal.increment()
        metrics.connections.increment()
        defer { metrics.connections.decrement() }
        let channel = connection.channel
        do {
            try await connection.executeThenClose { inbound, outbound in
                var handler = try ConnectionHandler(
                    settings: settings, ledger: ledger, metrics: metrics, logger: logger,
                    peerIsLoopback: peer.map(PeerAddress.isLoopback) ?? false)
                if let refusal = handler.refusalForPeer() {
                    try await outbound.write(refusal)
                    return
                }
                let liveness = ConnectionLiveness()
                try await withThrowingDiscardingTaskGroup { group in
                    group.addTask { await self.watch(liveness, channel: channel, outbound: outbound, logger: logger) }
                    try await withGracefulShutdownHandler {
                        for try await chunk in inbound {
                            liveness.heard()
                            metrics.bytesIn.increment(by: chunk.readableBytes)
                            handler.goingAway = liveness.isGoingAway
                            if handler.awaitsCertificate {
                                // Bytes arrived, so the TLS handshake (which verified the
                                // certificate against the client CA) is done.
                                handler.peerCertified(names: try await CertificateIdentity.peerNames(on: channel))
                            }
                            let finished = try await handler.received(chunk) { reply in
                                metrics.bytesOut.increment(by: reply.readableBytes)
                                try await outbound.write(reply)
                            }
                            if finished { break }
                        }
                    } onGracefulShutdown: {
                        guard liveness.beginGoingAway() else { return }
                        let goaway = self.goawayFrame()
                        Task {
                            // Goaway first, then stop reading: the batch being processed still
                            // commits and is acked; the loop ends when the input is closed.
                            if let goaway { try? await outbound.write(goaway) }
                            self.metrics.goawaysSent.increment()
                            channel.close(mode: .input, promise: nil)
                        }
                    }
                    group.cancelAll()
                }
            }
        } catch let error where settings.tls != nil && Self.isTLSFailure(error) {
            metrics.tlsFailures.increment()
            logger.notice("TLS with an agent failed (a plain client, or a certificate one side does not trust)", metadata: ["error": "\(error)"])
        } catch {
            logger.debug("connection ended", metadata: ["error": "\(error)"])
        }
    }

    /// A failed TLS handshake or record; a peer that closed without `close_notify` is only gone.
    private static func isTLSFailure(_ error: any Error) -> Bool {
        if let error = error as? NIOSSLError {
            if case .uncleanShutdown = error { return false }
            return true
        }
        return error is BoringSSLError
    }

    private func goawayFrame() -> ByteBuffer? {
        let milliseconds = settings.goawayRetryAfter.microseconds / 1000
        let goaway = GoAway(
            code: WireErrorCode.shuttingDown.rawValue, retryAfterMilliseconds: UInt32(clamping: milliseconds),
            message: "collector shutting down")
        return try? FrameEncoder().encode(.goaway(goaway))
    }

    /// Pings a silent agent after `pingAfter`, closes the connection after `idleTimeout`.
    /// Runs until cancelled.
    private func watch(
        _ liveness: ConnectionLiveness, channel: any Channel, outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>, logger: Logger
    ) async {
        let tick = min(settings.pingAfter / 4, .seconds(5))
        var pingValue: UInt64 = 0
        while true {
            do { try await Task.sleep(for: tick) } catch { return }
            let silent = liveness.silence()
            if silent >= settings.idleTimeout {
                metrics.idleClosed.increment()
                logger.notice("closing a connection silent for \(DurationText.format(silent))")
                channel.close(promise: nil)
                return
            }
            if silent >= settings.pingAfter, liveness.shouldPing() {
                pingValue &+= 1
                guard let ping = try? FrameEncoder().encode(.ping(pingValue)) else { continue }
                metrics.pingsSent.increment()
                try? await outbound.write(ping)
            }
        }
    }
}

/// When the agent was last heard from, whether it has been pinged since, and whether the
/// connection is going away. Shared by the connection's loop, its watchdog and its shutdown.
private final class ConnectionLiveness: Sendable {
    private struct State {
        var lastHeard = ContinuousClock.now
        var pinged = false
        var goingAway = false
    }
    private let state = Mutex(State())

    func heard() {
        state.withLock {
            $0.lastHeard = .now
            $0.pinged = false
        }
    }

    func silence() -> Duration { state.withLock { ContinuousClock.now - $0.lastHeard } }

    /// True once per silence.
    func shouldPing() -> Bool {
        state.withLock { state in
            defer { state.pinged = true }
            return !state.pinged
        }
    }

    /// True the first time.
    func beginGoingAway() -> Bool {
        state.withLock { state in
            defer { state.goingAway = true }
            return !state.goingAway
        }
    }

    var isGoingAway: Bool { state.withLock { $0.goingAway } }
}
