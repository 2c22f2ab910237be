public import Logging
public import NIOCore
import NIOPosix
import NIOSSL
public import ServiceLifecycle
public import TallyCore
import TallyService
public import TallyTLS
public import TallyWire

/// The agent-facing listener (default 127.0.0.1:7400): one task per connection, each driven by a
/// ``CollectorSession`` state machine. A batch is acked only after its ledger transaction
/// commits; a corrupt frame, a failed handshake or a limit breach gets an error frame with its
/// code, the connection is closed and nothing is written.
///
/// Liveness (SPEC §3, §8): an open session that has sent nothing for `pingAfter` gets a ping, and
/// one silent for `idleTimeout` — or whose handshake is not done within `handshakeTimeout` — is
/// closed with a `timeout` error (a half-open connection must not hold an agent's window).
/// On graceful shutdown every connection gets a `goaway(shutting_down)`: the batch being
/// processed is still committed and acked first, later batches are dropped unacknowledged (the
/// agent resends them), and the connection closes.
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
        /// How long a connection may take to finish its handshake.
        public var handshakeTimeout: Duration
        /// The `retry_after_ms` of the shutdown goaway.
        public var goawayRetryAfter: Duration
        /// TLS on every connection; nil: plain TCP.
        public var tls: ServerTLS?
        /// Plain TCP from peers not on loopback (never the default).
        public var allowPlaintextRemote: Bool
        public init(
            keyring: AgentKeyring, limits: SessionLimits, eventLimits: EventLimits, pingAfter: Duration = .seconds(30),
            idleTimeout: Duration = .seconds(90), handshakeTimeout: Duration = .seconds(10), goawayRetryAfter: Duration = .seconds(1),
            tls: ServerTLS? = nil, allowPlaintextRemote: Bool = false
        ) {
            self.handshakeTimeout = handshakeTimeout
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
    private let accepted: AcceptedConnections
    private let settings: Settings
    private let ledger: Ledger
    private let metrics: CollectorMetrics
    private let logger: Logger

    /// The address actually bound (useful with port 0).
    public var localAddress: SocketAddress? { listener.channel.localAddress }

    private init(
        listener: NIOAsyncChannel<NIOAsyncChannel<ByteBuffer, ByteBuffer>, Never>, accepted: AcceptedConnections,
        settings: Settings, ledger: Ledger, metrics: CollectorMetrics, logger: Logger
    ) {
        self.listener = listener
        self.accepted = accepted
        self.settings = settings
        self.ledger = ledger
        self.metrics = metrics
        self.logger = logger
    }

    /// Binds the listening socket; `run()` then serves it until graceful shutdown.
    public static func bind(
        host: String, port: Int, settings: Settings, ledger: Ledger, metrics: CollectorMetrics, logger: Logger
    ) async throws -> ProtocolServer {
        let tls = settings.tls
        let accepted = AcceptedConnections()
        let listener = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(ChannelOptions.backlog, value: 256)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .bind(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls.context)) }
                    return try accepted.wrap(channel) as NIOAsyncChannel<ByteBuffer, ByteBuffer>
                }
            }
        return ProtocolServer(listener: listener, accepted: accepted, settings: settings, ledger: ledger, metrics: metrics, logger: logger)
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
        try await AcceptLoop.run(listener, accepted: accepted) { connection in await self.serve(connection) }
    }

    /// Serves one agent connection until it closes, fails, or the task is cancelled.
    ///
    /// One loop owns the connection: it takes the inbound bytes, the clock's ticks and the
    /// shutdown signal as events, in order, and is the only writer of the outbound side. Every
    /// decision (goaway, ping, idle close, batch failure) is the session machine's.
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
                let (events, sink) = AsyncStream.makeStream(of: ConnectionEvent.self)
                var handler = try AgentConnection(
                    settings: settings, ledger: ledger, metrics: metrics, logger: logger,
                    peerIsLoopback: peer.map(PeerAddress.isLoopback) ?? false, completions: sink)
                if let refusal = handler.refusalForPeer() {
                    try await outbound.write(refusal)
                    return
                }
                // One chunk at a time: the reader waits until the loop has taken each chunk.
                // Batches do not hold the loop (they go through the connection's pipeline);
                // the session's window bounds how many of them are unacknowledged.
                let (taken, taking) = AsyncStream.makeStream(of: Void.self)
                let send: (ByteBuffer) async throws -> Void = { reply in
                    self.metrics.bytesOut.increment(by: reply.readableBytes)
                    try await outbound.write(reply)
                }
                // Whatever ends the loop, the batches already in the pipeline finish their
                // commits before the connection is gone (the ledger may close right after).
                do {
                    try await withThrowingDiscardingTaskGroup { group in
                        group.addTask { await Self.read(inbound, into: sink, pacedBy: taken) }
                        group.addTask { await Self.tick(every: self.tickInterval, into: sink) }
                        try await withGracefulShutdownHandler {
                            loop: for await event in events {
                                let now = ContinuousClock.now
                                switch event {
                                case .bytes(let chunk):
                                    metrics.bytesIn.increment(by: chunk.readableBytes)
                                    if handler.awaitsCertificate {
                                        // Bytes arrived, so the TLS handshake (which verified the
                                        // certificate against the client CA) is done.
                                        handler.peerCertified(names: try await CertificateIdentity.peerNames(on: channel))
                                    }
                                    let finished = try await handler.received(chunk, now: now, send: send)
                                    taking.yield()
                                    if finished { break loop }
                                case .tick:
                                    if try await handler.tick(now: now, send: send) { break loop }
                                case .shutdown:
                                    if try await handler.shutdown(send: send) { break loop }
                                case .completed(let sequence, let result):
                                    if try await handler.completed(sequence: sequence, result, send: send) { break loop }
                                case .ended:
                                    break loop
                                case .failed(let error):
                                    throw error
                                }
                            }
                        } onGracefulShutdown: {
                            sink.yield(.shutdown)
                        }
                        group.cancelAll()
                    }
                } catch {
                    await handler.drain()
                    throw error
                }
                await handler.drain()
            }
        } catch let error where settings.tls != nil && Self.isTLSFailure(error) {
            metrics.tlsFailures.increment()
            logger.notice("TLS with an agent failed (a plain client, or a certificate one side does not trust)", metadata: ["error": "\(error)"])
        } catch {
            logger.debug("connection ended", metadata: ["error": "\(error)"])
        }
    }

    /// What a connection's loop takes, in the order it happened.
    enum ConnectionEvent: Sendable {
        case bytes(ByteBuffer)
        case tick
        case shutdown
        /// A batch the connection handed to its ``BatchPipeline`` was committed (its ack) or failed.
        case completed(sequence: UInt64, Result<BatchAck, any Error>)
        /// The agent closed its side.
        case ended
        case failed(any Error)
    }

    /// How often the loop looks at the clock: often enough for the shortest of the deadlines.
    private var tickInterval: Duration {
        min(settings.pingAfter / 4, settings.handshakeTimeout / 4, .seconds(5))
    }

    private static func read(
        _ inbound: NIOAsyncChannelInboundStream<ByteBuffer>, into sink: AsyncStream<ConnectionEvent>.Continuation,
        pacedBy taken: AsyncStream<Void>
    ) async {
        var handed = taken.makeAsyncIterator()
        do {
            for try await chunk in inbound {
                sink.yield(.bytes(chunk))
                guard await handed.next() != nil else { return }
            }
            sink.yield(.ended)
        } catch {
            sink.yield(.failed(error))
        }
    }

    private static func tick(every interval: Duration, into sink: AsyncStream<ConnectionEvent>.Continuation) async {
        while true {
            do { try await Task.sleep(for: interval) } catch { return }
            sink.yield(.tick)
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
}
