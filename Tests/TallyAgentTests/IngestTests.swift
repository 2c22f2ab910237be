import NIOCore
import NIOPosix
import Synchronization
import TallyAgent
import TallyClient
import TallyCore
import TallySpool
import TallyTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("HTTP and socket ingest")
struct IngestTests {
    @Test func answersPerEventWithFingerprintsAndReasons() async throws {
        let agent = try await TestAgent.start()
        let exchange = HTTPExchange(host: "127.0.0.1", port: agent.port)
        let good = event(1)
        let body = "[\(good.jsonLine), {\"metric\":\"api_calls\",\"quantity\":1,\"timestamp\":\"2026-04-13T12:00:00Z\"}, \(event(2).jsonLine)]"
        let response = try await exchange.request(method: "POST", path: "/v1/events", headers: ndjson, body: ByteBuffer(string: body))
        #expect(response.status == 207)
        let outcomes = try IngestAnswer.outcomes(from: response.body)
        #expect(outcomes.count == 3)
        #expect(outcomes[0] == .accepted(Fingerprint(of: good)))
        guard case .rejected(let rejection) = outcomes[1] else {
            Issue.record("the event without a tenant was accepted")
            return
        }
        #expect(rejection.reason == .missingField)
        #expect(rejection.field == "tenant")
        #expect(outcomes[2] == .accepted(Fingerprint(of: event(2))))
        let stats = try await agent.agent.spool.stats()
        #expect(stats.events == 2)
        await agent.stop()
    }

    @Test func answersOnlyOnceTheEventsAreDurable() async throws {
        let operations = GatedFileOperations()
        let agent = try await TestAgent.start(fileOperations: operations)
        operations.close(gate: true)
        let answered = Mutex(false)
        let client = TallyClient(port: agent.port, timeout: TestAgent.clientTimeout)
        let request = Task {
            let outcomes = try await client.send([event(7)])
            answered.withLock { $0 = true }
            return outcomes
        }
        // The append reached its fsync, which is held: no answer may exist yet.
        #expect(await eventually { operations.syncsWaiting > 0 })
        #expect(answered.withLock { $0 } == false)
        operations.close(gate: false)
        let outcomes = try await request.value
        #expect(outcomes == [.accepted(Fingerprint(of: event(7)))])
        await agent.stop()
    }

    @Test(arguments: [(SpoolFullPolicy.block, 503), (SpoolFullPolicy.rejectNew, 429)])
    func fullSpoolIsRefusedWithRetryAfter(policy: SpoolFullPolicy, status: Int) async throws {
        let agent = try await TestAgent.start(configure: {
            $0.spool.maxSpoolBytes = 8 << 10
            $0.spool.segmentBytes = 64 << 10
            $0.spool.fullPolicy = policy
        })
        let exchange = HTTPExchange(host: "127.0.0.1", port: agent.port)
        var refused: HTTPExchange.Response?
        var refusedBody = ""
        for round in 0..<200 {
            let body = (0..<10).map { event(round * 10 + $0).jsonLine }.joined(separator: "\n")
            refusedBody = body
            let response = try await exchange.request(method: "POST", path: "/v1/events", headers: ndjson, body: ByteBuffer(string: body))
            if response.status != 200 {
                refused = response
                break
            }
        }
        let before = try await agent.agent.spool.stats().events
        #expect(refused?.status == status)
        #expect(refused?.header("retry-after").flatMap(Int.init).map { $0 >= 1 } == true)
        #expect(refused?.text.contains("spool_full") == true)
        // Nothing of a refused request is kept.
        let again = try await exchange.request(method: "POST", path: "/v1/events", headers: ndjson, body: ByteBuffer(string: refusedBody))
        #expect(again.status == status)
        #expect(try await agent.agent.spool.stats().events == before)
        do {
            _ = try await TallyClient(port: agent.port, timeout: TestAgent.clientTimeout).send((0..<10).map { event(100_000 + $0) })
            Issue.record("the client did not report the full spool")
        } catch {
            guard case .spoolFull(let seconds, let code) = error else {
                Issue.record("unexpected \(error)")
                return
            }
            #expect(code == status)
            #expect(seconds != nil)
        }
        await agent.stop()
    }

    /// With an hour's fsync window, a request is answered as soon as no other is on its way (see
    /// GroupCommit): one after another on a keep-alive connection, after a request that kept
    /// nothing, and once a request held open on another connection is finished or dropped. An
    /// arrival left counted would hold the next answer for the hour (the request times out).
    @Test func requestsAreNotHeldForTheFsyncWindowWhenNoOtherIsOnItsWay() async throws {
        let agent = try await TestAgent.start { $0.spool.fsync = .interval(.seconds(3600)) }
        let exchange = HTTPExchange(host: "127.0.0.1", port: agent.port)
        @Sendable func post(_ body: String) async throws -> Int {
            try await exchange.request(method: "POST", path: "/v1/events", headers: ndjson, body: ByteBuffer(string: body), timeout: .seconds(20))
                .status
        }
        for index in 0..<3 { #expect(try await post(event(index).jsonLine) == 200) }
        #expect(try await post("{\"quantity\":1}") == 400)
        #expect(try await post(event(3).jsonLine) == 200)

        // A request whose body is still coming is on its way; once complete, both are answered.
        let line = event(4).jsonLine
        let held = try BlockingHTTPSocket(port: agent.port, timeoutSeconds: 20)
        try held.send(
            "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\nContent-Length: \(line.utf8.count)\r\n\r\n")
        let other = Task { try await post(event(5).jsonLine) }
        try held.send(line)
        #expect(try await held.readHeadOffThePool().hasPrefix("HTTP/1.1 200"))
        #expect(try await other.value == 200)

        // ... or until its connection goes.
        let dropped = try BlockingHTTPSocket(port: agent.port, timeoutSeconds: 20)
        try dropped.send(
            "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\nContent-Length: 100\r\n\r\n{")
        let another = Task { try await post(event(6).jsonLine) }
        dropped.close()
        #expect(try await another.value == 200)
        #expect(try await agent.agent.spool.stats().events == 7)
        await agent.stop()
    }

    @Test func everyFsyncIsInTheHistogram() async throws {
        let agent = try await TestAgent.start()  // fsync: always
        let exchange = HTTPExchange(host: "127.0.0.1", port: agent.port)
        for index in 0..<3 {
            let response = try await exchange.request(
                method: "POST", path: "/v1/events", headers: ndjson, body: ByteBuffer(string: event(index).jsonLine))
            #expect(response.status == 200)
        }
        let metrics = try await exchange.request(method: "GET", path: "/metrics")
        let count = metrics.text.split(separator: "\n").first { $0.hasPrefix("tally_agent_spool_fsync_seconds_count ") }
            .flatMap { Int($0.split(separator: " ").last ?? "") }
        #expect((count ?? 0) >= 3, "\(metrics.text)")
        await agent.stop()
    }

    @Test func malformedBodiesGetClearAnswersAndCounters() async throws {
        let agent = try await TestAgent.start(configure: { $0.maxBodyBytes = 4096 })
        let exchange = HTTPExchange(host: "127.0.0.1", port: agent.port)
        let garbage = try await exchange.request(method: "POST", path: "/v1/events", headers: ndjson, body: ByteBuffer(string: "{not json"))
        #expect(garbage.status == 400)
        let outcomes = try IngestAnswer.outcomes(from: garbage.body)
        guard case .rejected(let rejection)? = outcomes.first else {
            Issue.record("garbage was not rejected: \(garbage.text)")
            return
        }
        #expect(rejection.reason == .malformed)
        #expect(!rejection.message.isEmpty)
        let empty = try await exchange.request(method: "POST", path: "/v1/events", headers: ndjson, body: ByteBuffer(string: "  \n"))
        #expect(empty.status == 400)
        #expect(empty.text.contains("no_events"))
        let huge = try await exchange.request(
            method: "POST", path: "/v1/events", headers: ndjson, body: ByteBuffer(string: String(repeating: "x", count: 10_000)))
        #expect(huge.status == 413)
        let missing = try await exchange.request(method: "GET", path: "/nope")
        #expect(missing.status == 404)
        let metrics = try await exchange.request(method: "GET", path: "/metrics")
        #expect(metrics.status == 200)
        #expect(metrics.text.contains("tally_agent_events_rejected_total{reason=\"malformed\"} 1"))
        #expect(metrics.text.contains("tally_agent_requests_refused_total{status=\"413\"} 1"))
        #expect(metrics.text.contains("tally_agent_spool_append_seconds"))
        #expect(try await agent.agent.spool.stats().events == 0)
        await agent.stop()
    }

    @Test func healthNeedsAReachableCollector() async throws {
        let collector = TestCollector()
        let port = try await collector.start()
        let dead = try DeadPort()
        defer { dead.close() }
        let down = try await TestAgent.start(collectors: [.init(host: "127.0.0.1", port: dead.port)])
        let up = try await TestAgent.start(collectors: [.init(host: "127.0.0.1", port: port)])
        let unhealthy = try await HTTPExchange(host: "127.0.0.1", port: down.port).request(method: "GET", path: "/healthz")
        #expect(unhealthy.status == 503)
        #expect(unhealthy.text.contains("\"writable\":true"))
        #expect(
            await eventually {
                (try? await HTTPExchange(host: "127.0.0.1", port: up.port).request(method: "GET", path: "/healthz").status) == 200
            })
        await down.stop()
        await up.stop()
        await collector.stop()
    }

    @Test func unixSocketAnswersEveryLineInOrder() async throws {
        let path = temporaryDirectory() + "/agent.sock"
        let agent = try await TestAgent.start(configure: { $0.socketPath = path })
        #expect(await eventually { access(path, F_OK) == 0 })
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(unixDomainSocketPath: path) { channel in
                channel.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel) }
            }
        let input = [event(1).jsonLine, "{\"tenant\":\"acme\"}", "", event(2).jsonLine].joined(separator: "\n") + "\n"
        let text = try await channel.executeThenClose { inbound, outbound in
            try await outbound.write(ByteBuffer(string: input))
            var text = ""
            for try await chunk in inbound {
                text += String(buffer: chunk)
                if text.split(separator: "\n").count >= 3 { break }
            }
            return text
        }
        let lines = text.split(separator: "\n").map(String.init)
        #expect(lines.count == 3)
        #expect(lines.first == "ok \(Fingerprint(of: event(1)))")
        #expect(lines.dropFirst().first?.hasPrefix("err missing_field metric") == true)
        #expect(lines.last == "ok \(Fingerprint(of: event(2)))")
        #expect(try await agent.agent.spool.stats().events == 2)
        await agent.stop()
    }
}

/// The Content-Type of an NDJSON body (the agent refuses other types with 415).
let ndjson = [("Content-Type", "application/x-ndjson")]
