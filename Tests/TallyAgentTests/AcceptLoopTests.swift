import NIOCore
import NIOPosix
import TallyCLI
import Testing

/// `AcceptLoop` is the accept loop of the collector's protocol port and the agent's two ingest
/// listeners. Cancelling it (a test's `serving.cancel()`, or a service group's hard stop) must
/// close every connection it has accepted, including those still queued in the listener's
/// stream: swift-nio stops the process ("Deinited NIOAsyncWriter without calling finish()")
/// when a queued `NIOAsyncChannel` is dropped unused (apple/swift-nio#3481).
@Suite struct AcceptLoopTests {
    @Test func cancellingWithConnectionsStillQueuedClosesEveryOneAndReturns() async throws {
        for round in 0..<12 {
            let accepted = AcceptedConnections()
            let listener = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .serverChannelOption(ChannelOptions.backlog, value: 256)
                .bind(host: "127.0.0.1", port: 0) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try accepted.wrap(channel) as NIOAsyncChannel<ByteBuffer, ByteBuffer>
                    }
                }
            let port = try #require(listener.channel.localAddress?.port)
            let (served, servedSink) = AsyncStream<Void>.makeStream()
            let serving = Task {
                try await AcceptLoop.run(listener, accepted: accepted) { connection in
                    servedSink.yield()
                    try? await connection.executeThenClose { inbound, _ in
                        for try await _ in inbound {}
                    }
                }
            }
            // Many clients at once, so that some are still queued in the listener's stream when
            // the loop is cancelled after the first one is served.
            let clients = try await withThrowingTaskGroup(of: Channel.self) { group in
                for _ in 0..<64 {
                    group.addTask {
                        try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                            .connect(host: "127.0.0.1", port: port).get()
                    }
                }
                return try await group.reduce(into: [Channel]()) { $0.append($1) }
            }
            var servedIterator = served.makeAsyncIterator()
            _ = await servedIterator.next()
            serving.cancel()
            // The loop returns (cancelled or not, it must not hang), and every client sees its
            // connection closed by the server.
            _ = await serving.result
            for client in clients {
                try await client.closeFuture.get()
            }
            #expect(clients.allSatisfy { !$0.isActive }, "round \(round)")
        }
    }
}
