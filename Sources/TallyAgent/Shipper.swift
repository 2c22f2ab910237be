public import Logging
import NIOCore
import NIOPosix
public import ServiceLifecycle
public import TallyTLS
public import TallyConfig
import TallyCore
public import TallySpool
public import TallyWire

/// Ships the spool to collectors: reads it oldest first in bounded chunks, cuts batches (by
/// count, bytes and linger), compresses them, keeps a window in flight through ``AgentSession``,
/// and acknowledges spool data only for the contiguous prefix of batches the collector acked.
/// Every decision is ``ShipperMachine``'s; ``ShipLoop`` carries them out.
///
/// Guarantees:
/// - Spool data is freed only after an application-level ack for every batch before it.
/// - A batch keeps its sequence and its events across reconnects until it is acked; sequences
///   are leased durably before use (``Spool/takeSequence()``), so none is reused after a restart.
/// - Memory is bounded by the window: at most `window` batches are held, each at most
///   `batching.maxEvents` events and about `batching.maxBytes` of spool records.
/// - The first collector is picked by the agent id (``CollectorRotation``), so a fleet listing the
///   same collectors spreads evenly across them. Connection failures move to the next collector
///   in list order (wrapping) with exponential backoff and full jitter; a goaway drains in-flight
///   acks, then moves on after the delay it asked for; non-retryable errors move on and back off
///   long (an operator must act). Every unacked batch is resent to the next collector. A batch
///   unacknowledged for ``Settings/ackTimeout`` ends the connection the same way.
/// - Nothing crosses the network in clear text unless allowed: with ``Settings/tls`` every
///   connection is TLS and the collector's certificate is verified (CA and name) before the
///   hello; without it a collector that is not on loopback is disconnected before anything is
///   sent, unless ``Settings/allowPlaintextRemote`` is set.
public final class Shipper: Service {
    /// How the shipper runs.
    public struct Settings: Sendable {
        public var collectors: [HostPort]
        public var agentId: String
        public var key: String?
        public var batching = AgentConfig.Batching()
        public var window = 8
        public var reconnect = AgentConfig.Reconnect()
        /// Stop once the spool is empty and every batch is acked (`tallyctl spool drain`).
        public var stopWhenDrained = false
        /// At most this many events per second (nil: as fast as the collector acks).
        public var eventsPerSecond: Int?
        /// How long to wait for in-flight acks on shutdown.
        public var shutdownGrace: Duration = .seconds(2)
        /// Give up the handshake after this long.
        public var handshakeTimeout: Duration = .seconds(10)
        /// A batch unacknowledged for this long ends the connection; unacked batches are resent.
        public var ackTimeout: Duration = .seconds(30)
        /// zstd level for batch payloads.
        public var compression: BatchPayloadEncoder.Compression = .zstd(level: 3)
        /// TLS to every collector; nil: plain TCP (loopback collectors only, unless allowed).
        public var tls: ClientTLS?
        /// Plain TCP to collectors not on loopback.
        public var allowPlaintextRemote = false

        public init(collectors: [HostPort], agentId: String, key: String?) {
            self.collectors = collectors
            self.agentId = agentId
            self.key = key
        }

        /// The settings of `config`; its TLS files are read here, so a bad one fails the start.
        public init(_ config: AgentConfig) throws(TLSSetupError) {
            self.init(collectors: config.collectors, agentId: config.agentId, key: config.key)
            batching = config.batching
            window = config.window
            reconnect = config.reconnect
            tls = try config.tls.map { files throws(TLSSetupError) in try ClientTLS(files, place: "tls") }
            allowPlaintextRemote = config.allowPlaintextRemote
        }
    }

    enum Input: Sendable {
        case frame(connection: Int, Frame)
        case closed(connection: Int, String?)
        case dataAvailable
        case tick
        case shutdown
    }

    public let settings: Settings
    public let status = ShipperStatus()
    let spool: Spool
    let metrics: AgentMetrics
    let logger: Logger
    private let inputs: AsyncStream<Input>
    private let input: AsyncStream<Input>.Continuation

    public init(spool: Spool, settings: Settings, metrics: AgentMetrics, logger: Logger) {
        self.spool = spool
        self.settings = settings
        self.metrics = metrics
        self.logger = logger
        let stream = AsyncStream.makeStream(of: Input.self)
        inputs = stream.stream
        input = stream.continuation
    }

    /// New events are in the spool: cut batches now rather than at the next tick.
    public func spoolAppended() { input.yield(.dataAvailable) }

    /// Stops the shipper (as a graceful shutdown does).
    public func stop() { input.yield(.shutdown) }

    public func run() async throws {
        guard !settings.collectors.isEmpty else { throw NoCollectorConfigured() }
        if let recovered = spool.recovery.sequenceRecovered {
            logger.error("batch sequence store recovered", metadata: ["detail": "\(recovered)"])
        }
        let ticker = Task { [input, linger = settings.batching.linger] in
            let period = max(linger, .milliseconds(5))
            while !Task.isCancelled {
                try? await Task.sleep(for: period)
                input.yield(.tick)
            }
        }
        defer { ticker.cancel() }
        let encoder: BatchPayloadEncoder
        do {
            encoder = try BatchPayloadEncoder(compression: settings.compression)
        } catch {
            throw ShipperError.encoding(error)
        }
        let encoding = BatchEncoding(encoder: encoder)
        var loop = ShipLoop(shipper: self, encoding: encoding, iterator: inputs.makeAsyncIterator())
        do {
            try await withGracefulShutdownHandler {
                try await loop.run()
            } onGracefulShutdown: { [input] in
                input.yield(.shutdown)
            }
        } catch {
            await encoding.shutdown()
            throw error
        }
        await encoding.shutdown()
    }

    /// Opens a framed connection to `endpoint` (TLS when configured); inbound frames are fed to
    /// the loop as inputs. A plain connection to a peer not on loopback is closed at once with
    /// ``TransportRefusal`` unless allowed.
    func connect(_ endpoint: HostPort) async throws -> NIOAsyncChannel<Frame, Frame> {
        let tls = settings.tls
        let (channel, handshake) = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(.seconds(5))
            .connect(host: endpoint.host, port: endpoint.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    let handshake = try tls?.addHandlers(to: channel.pipeline.syncOperations, host: endpoint.host)
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder()))
                    try channel.pipeline.syncOperations.addHandler(MessageToByteHandler(FrameEncoder()))
                    return (try NIOAsyncChannel<Frame, Frame>(wrappingChannelSynchronously: channel), handshake)
                }
            }
        if let handshake {
            // The collector is verified (CA and name) before the hello is written.
            do {
                try await handshake.get()
            } catch {
                try? await channel.channel.close()
                throw error
            }
        }
        if tls == nil, !settings.allowPlaintextRemote {
            // A peer that closed the connection at once has no address any more: that is a
            // failed connection, retried as usual — not a peer off loopback, which waits for an
            // operator (a collector restarting behind a proxy once sent agents into that wait).
            guard let remote = channel.channel.remoteAddress else {
                try? await channel.channel.close()
                throw ChannelError.ioOnClosedChannel
            }
            guard PeerAddress.isLoopback(remote) else {
                try? await channel.channel.close()
                throw TransportRefusal(collector: endpoint)
            }
        }
        return channel
    }

    func feed(_ value: Input) { input.yield(value) }
}

/// Why the shipper stopped.
public enum ShipperError: Error, Sendable, CustomStringConvertible {
    /// An invariant of the spool window broke (a sequence leased twice): shipping stops rather
    /// than risk a batch under two sequences.
    case invariant(String)
    /// A batch could not be encoded; the wire error is kept as it came.
    case encoding(WireError)

    public var description: String {
        switch self {
        case .invariant(let problem): "shipper: \(problem)"
        case .encoding(let error): "batch encoding: \(error)"
        }
    }
}

/// The shipper was given no collector (config validation and the commands refuse that first).
public struct NoCollectorConfigured: Error, CustomStringConvertible {
    public var description: String { "no collector is configured: at least one is needed" }
}

/// A plain TCP connection to a collector not on loopback, refused by the agent itself before
/// anything was sent: an operator must configure TLS (or allow plain TCP explicitly).
public struct TransportRefusal: Error, CustomStringConvertible {
    public let collector: HostPort
    public var description: String {
        "\(collector) is not on loopback and no TLS is configured: refusing to send usage in clear text (configure tls, or allow_plaintext_remote)"
    }
}
