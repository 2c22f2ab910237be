import NIOCore
import NIOPosix
import TallyAgent
import TallyClient
import TallyCore
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Ingest throughput into the durable spool (fsync interval 5 ms, the default policy). Not a
/// timed test: it runs only with TALLY_BENCH=1 and prints a table (use a release build).
@Suite("Ingest benchmark", .enabled(if: getenv("TALLY_BENCH") != nil))
struct IngestBenchmark {
    static let total = 200_000

    @Test func httpBatchesOf100AndSocketStream() async throws {
        let path = temporaryDirectory() + "/bench.sock"
        let agent = try await TestAgent.start(configure: {
            $0.spool.fsync = .interval(.milliseconds(5))
            $0.socketPath = path
        })
        let lines = (0..<100).map { event($0).jsonLine }
        // HTTP: 8 concurrent clients, NDJSON bodies of 100 events.
        let body = ByteBuffer(string: lines.joined(separator: "\n"))
        let exchange = HTTPExchange(host: "127.0.0.1", port: agent.port)
        let start = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<8 {
                group.addTask {
                    for _ in 0..<(Self.total / 100 / 8) {
                        let response = try await exchange.request(method: "POST", path: "/v1/events", headers: ndjson, body: body)
                        guard response.status == 200 else { throw TallyClientError.unexpectedStatus(response.status, response.text) }
                    }
                }
            }
            try await group.waitForAll()
        }
        let httpRate = Self.rate(Self.total, ContinuousClock.now - start)
        // Socket: one stream, written in 1,000-line chunks without waiting for answers.
        _ = access(path, F_OK)
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(unixDomainSocketPath: path) { channel in
                channel.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel) }
            }
        let chunk = ByteBuffer(string: (0..<10).map { _ in lines.joined(separator: "\n") + "\n" }.joined())
        let socketStart = ContinuousClock.now
        let answered = try await channel.executeThenClose { inbound, outbound in
            let writer = Task {
                for _ in 0..<(Self.total / 1_000) { try await outbound.write(chunk) }
            }
            var answers = 0
            for try await buffer in inbound {
                answers += buffer.readableBytesView.reduce(0) { $0 + ($1 == 0x0A ? 1 : 0) }
                if answers >= Self.total { break }
            }
            try await writer.value
            return answers
        }
        let socketRate = Self.rate(answered, ContinuousClock.now - socketStart)
        print("figure                               | value        | unit     | target")
        print("HTTP NDJSON batches of 100, 8 clients | \(httpRate) | events/s | 300,000")
        print("Unix socket NDJSON stream            | \(socketRate) | events/s | 1,000,000")
        #expect(answered == Self.total)
        await agent.stop()
    }

    static func rate(_ events: Int, _ elapsed: Duration) -> Int {
        let (seconds, attoseconds) = elapsed.components
        let micros = seconds * 1_000_000 + attoseconds / 1_000_000_000_000
        return micros > 0 ? Int(Int64(events) * 1_000_000 / micros) : 0
    }
}
