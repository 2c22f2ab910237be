public import NIOCore
import ServiceLifecycle

/// The one accept loop of Tally's three listeners (the agent's HTTP ingest and NDJSON socket,
/// the collector's protocol port): every accepted connection is served in its own child task,
/// a connection's failure never ends the loop, and a graceful shutdown closes the listening
/// socket (no new connections) while the connections already accepted finish under their own
/// shutdown rules. Returns once the listener is closed and every connection task has ended.
public enum AcceptLoop {
    public static func run<Connection: Sendable>(
        _ listener: NIOAsyncChannel<Connection, Never>, serve: @escaping @Sendable (Connection) async -> Void
    ) async throws {
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
