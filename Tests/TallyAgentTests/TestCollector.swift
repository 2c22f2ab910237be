import NIOCore
import NIOPosix
import Synchronization
import TallyCore
import TallyService
import TallyWire

/// A small collector for loopback tests, built from ``CollectorSession`` and NIO: it accepts
/// agents, runs the handshake, decodes every batch, dedupes events by fingerprint and acks.
/// Its behaviour can be bent to cut connections, hold acks or send a goaway.
final class TestCollector: Sendable {
    struct Received: Sendable, Hashable {
        var connection: Int
        var sequence: UInt64
        var events: [UsageEvent]
    }

    /// How the collector treats a connection (by its number, from 1).
    struct Behaviour: Sendable {
        /// Cut the connection (no acks) once this many batches arrived on it.
        var cutAfterBatches: Int?
        /// Send a goaway after acking this many batches on it.
        var goawayAfterAcks: Int?
    }

    let keyring: AgentKeyring
    let behaviour: @Sendable (Int) -> Behaviour
    private let state = Mutex<(received: [Received], fingerprints: Set<Fingerprint>, committed: [UInt64: BatchAck], connections: Int)>(
        ([], [], [:], 0))
    private let server = Mutex<(any Channel)?>(nil)

    init(keyring: AgentKeyring = AgentKeyring(), behaviour: @escaping @Sendable (Int) -> Behaviour = { _ in Behaviour() }) {
        self.keyring = keyring
        self.behaviour = behaviour
    }

    var received: [Received] { state.withLock { $0.received } }
    var connections: Int { state.withLock { $0.connections } }
    /// Distinct events committed (deduplicated by fingerprint).
    var distinctEvents: Int { state.withLock { $0.fingerprints.count } }

    /// Starts listening on an ephemeral loopback port; returns it.
    func start() async throws -> Int {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: "127.0.0.1", port: 0) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder()))
                    try channel.pipeline.syncOperations.addHandler(MessageToByteHandler(FrameEncoder()))
                    let connection = try NIOAsyncChannel<Frame, Frame>(wrappingChannelSynchronously: channel)
                    // Kept until it closes: a connection accepted while `stop()` closes the
                    // listener is dropped unused by the listener's stream, and swift-nio stops
                    // the process then (apple/swift-nio#3481; it stopped a whole test run once,
                    // an agent reconnecting as its test stopped this collector).
                    AcceptedConnections.keepUntilClosed(connection)
                    return connection
                }
            }
        server.withLock { $0 = channel.channel }
        Task {
            try? await channel.executeThenClose { connections in
                await withDiscardingTaskGroup { group in
                    do {
                        for try await connection in connections {
                            let number = state.withLock { state in
                                state.connections += 1
                                return state.connections
                            }
                            group.addTask { await self.serve(connection, number: number) }
                        }
                    } catch {}
                }
            }
        }
        return channel.channel.localAddress?.port ?? 0
    }

    func stop() async {
        let channel = server.withLock { $0 }
        try? await channel?.close()
    }

    private func serve(_ connection: NIOAsyncChannel<Frame, Frame>, number: Int) async {
        let behaviour = behaviour(number)
        var session = CollectorSession(configuration: CollectorSession.Configuration(keyring: keyring), collectorNonce: Nonce.random())
        var batches = 0
        var acks = 0
        try? await connection.executeThenClose { inbound, outbound in
            for try await frame in inbound {
                switch session.received(frame) {
                case .none: break
                case .send(let reply): try await outbound.write(reply)
                case .sendAndClose(let reply):
                    try await outbound.write(reply)
                    return
                case .close: return
                case .dropBatch: break
                case .process(let batch):
                    batches += 1
                    if let cut = behaviour.cutAfterBatches {
                        // Hold every ack on this connection, then cut it.
                        record(connection: number, batch: batch)
                        if batches >= cut { return }
                        continue
                    }
                    let ack = commit(connection: number, batch: batch)
                    switch session.batchCompleted(ack) {
                    case .send(let reply): try await outbound.write(reply)
                    case .sendAndClose(let reply):
                        try await outbound.write(reply)
                        return
                    default: break
                    }
                    acks += 1
                    if let goaway = behaviour.goawayAfterAcks, acks >= goaway {
                        switch session.shutdown(retryAfterMilliseconds: 10) {
                        case .send(let reply): try await outbound.write(reply)
                        case .sendAndClose(let reply):
                            try await outbound.write(reply)
                            return
                        default: break
                        }
                    }
                }
            }
        }
    }

    private func decode(_ batch: Batch) -> [UsageEvent] {
        guard let decoder = try? BatchPayloadDecoder(), let events = try? decoder.decode(batch.payload) else { return [] }
        return events
    }

    private func record(connection: Int, batch: Batch) {
        let events = decode(batch)
        state.withLock { $0.received.append(Received(connection: connection, sequence: batch.sequence, events: events)) }
    }

    private func commit(connection: Int, batch: Batch) -> BatchAck {
        let events = decode(batch)
        return state.withLock { state in
            state.received.append(Received(connection: connection, sequence: batch.sequence, events: events))
            if let original = state.committed[batch.sequence] { return original }
            var accepted: UInt32 = 0
            var duplicate: UInt32 = 0
            for event in events {
                if state.fingerprints.insert(Fingerprint(of: event)).inserted { accepted += 1 } else { duplicate += 1 }
            }
            let ack = BatchAck(sequence: batch.sequence, accepted: accepted, duplicate: duplicate)
            state.committed[batch.sequence] = ack
            return ack
        }
    }
}
