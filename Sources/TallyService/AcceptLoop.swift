public import NIOCore
import ServiceLifecycle
import Synchronization

/// The one accept loop of Tally's three listeners (the agent's HTTP ingest and NDJSON socket,
/// the collector's protocol port): every accepted connection is served in its own child task,
/// a connection's failure never ends the loop, and a graceful shutdown closes the listening
/// socket (no new connections) while the connections already accepted finish under their own
/// shutdown rules. Returns once the listener is closed, every connection task has ended and
/// every connection accepted but never served is closed.
public enum AcceptLoop {
    /// `accepted` must be the one whose ``AcceptedConnections/wrap(_:)`` made the listener's
    /// connections.
    public static func run<Connection: Sendable>(
        _ listener: NIOAsyncChannel<Connection, Never>, accepted: AcceptedConnections,
        serve: @escaping @Sendable (Connection) async -> Void
    ) async throws {
        defer { accepted.closeUnserved() }
        try await withGracefulShutdownHandler {
            try await listener.executeThenClose { connections in
                try await withThrowingDiscardingTaskGroup { group in
                    for try await connection in connections {
                        group.addTask { await serve(connection) }
                    }
                }
            }
        } onGracefulShutdown: {
            listener.channel.close(promise: nil)
        }
    }
}

/// The connections a listener accepted, from their channel initializer until they close.
///
/// swift-nio stops the process ("Deinited NIOAsyncWriter without calling finish()",
/// apple/swift-nio#3481) when a connection's `NIOAsyncChannel` is dropped unused, and the
/// listener's stream drops them in two cases Tally meets at every shutdown: the stream's
/// consumer is cancelled while connections wait in it, and a connection whose initializer was
/// still running when the listener closed arrives after the stream ended. So each connection
/// made by ``wrap(_:)`` keeps its `NIOAsyncChannel` until the channel closes, and finishes its
/// outbound writer then; and ``AcceptLoop/run(_:accepted:serve:)`` closes, when it returns,
/// every connection that was never served — a connection accepted later is closed at once.
public final class AcceptedConnections: Sendable {
    private struct State {
        var listening = true
        var open: [ObjectIdentifier: any Channel] = [:]
    }
    private let state = Mutex(State())

    public init() {}

    /// `channel` wrapped for the accept loop; call it in the listener's child channel
    /// initializer, on the channel's event loop.
    public func wrap<Inbound: Sendable, Outbound: Sendable>(_ channel: any Channel) throws -> NIOAsyncChannel<Inbound, Outbound> {
        let connection = try NIOAsyncChannel<Inbound, Outbound>(wrappingChannelSynchronously: channel)
        let id = ObjectIdentifier(channel)
        Self.keepUntilClosed(connection)
        channel.closeFuture.whenComplete { [self] _ in _ = state.withLock { $0.open.removeValue(forKey: id) } }
        let listening = state.withLock { state in
            if state.listening { state.open[id] = channel }
            return state.listening
        }
        if !listening { channel.close(promise: nil) }
        return connection
    }

    /// Keeps `connection` until its channel closes, and finishes its outbound writer then (the
    /// scoped call; a no-op when the connection was served): dropped unused before that, it
    /// would stop the process. For a listener whose accept loop is not ``AcceptLoop`` (the
    /// collector's HTTP server).
    public static func keepUntilClosed<Inbound: Sendable, Outbound: Sendable>(_ connection: NIOAsyncChannel<Inbound, Outbound>) {
        connection.channel.closeFuture.whenComplete { _ in Task { try? await connection.executeThenClose { _, _ in } } }
    }

    /// Closes every connection still open (the accept loop has ended: none of them will be
    /// served), and every one accepted from now on.
    func closeUnserved() {
        let unserved = state.withLock { state in
            state.listening = false
            return Array(state.open.values)
        }
        for channel in unserved { channel.close(promise: nil) }
    }
}
