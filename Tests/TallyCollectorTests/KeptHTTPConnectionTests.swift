import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOPosix
import Testing

@testable import TallyCollector

/// The collector's HTTP server (Hummingbird's HTTP/1 channel, `KeptHTTP1Channel`) stopped while
/// connections are still arriving: it must not take the process down ("Deinited NIOAsyncWriter
/// without calling finish()", apple/swift-nio#3481, which stopped a test run; with Hummingbird's
/// plain `.http1()` this test stops the process about one run in three), and it stops listening.
@Suite struct KeptHTTPConnectionTests {
    @Test func stoppingTheServerWithConnectionsArrivingDoesNotStopTheProcess() async throws {
        for _ in 0..<16 {
            let router = Router()
            router.get("ping") { _, _ in "pong" }
            let (bound, boundSink) = AsyncStream<Int>.makeStream()
            let app = Application(
                router: router, server: KeptHTTP1Channel.builder(), configuration: .init(address: .hostname("127.0.0.1", port: 0)),
                onServerRunning: { channel in boundSink.yield(channel.localAddress?.port ?? 0) },
                logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
            let serving = Task { try await app.runService() }
            var ports = bound.makeAsyncIterator()
            let port = try #require(await ports.next())
            // Many clients at once; the server is cancelled while they arrive.
            let clients = try await withThrowingTaskGroup(of: (any Channel)?.self) { group in
                for _ in 0..<64 {
                    group.addTask {
                        try? await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: port).get()
                    }
                }
                serving.cancel()
                return try await group.reduce(into: [any Channel]()) { if let client = $1 { $0.append(client) } }
            }
            _ = await serving.result
            // The process is still here, and the server has stopped listening.
            for client in clients { try? await client.close() }
            await #expect(throws: (any Error).self) {
                try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: port).get()
            }
        }
    }
}
