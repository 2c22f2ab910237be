import Hummingbird
import HummingbirdTesting
import TallyAgent
import TallyClient
import TallyCore
import TallyHummingbird
import TallyTestSupport
import Testing

@Suite("TallyClient and the Hummingbird middleware against a real agent")
struct ClientTests {
    @Test func clientGetsFingerprintsAndRejections() async throws {
        let agent = try await TestAgent.start()
        let client = TallyClient(port: agent.port, timeout: TestAgent.clientTimeout)
        var bad = event(2)
        bad.tenant = ""
        let outcomes = try await client.send([event(1), bad])
        #expect(outcomes.first == .accepted(Fingerprint(of: event(1))))
        guard case .rejected(let rejection)? = outcomes.last else {
            Issue.record("an event with an empty tenant was accepted")
            return
        }
        #expect(rejection.field == "tenant")
        #expect(try await client.record(event(3)) == Fingerprint(of: event(3)))
        #expect(try await agent.agent.spool.stats().events == 2)
        await agent.stop()
    }

    @Test func clientReportsAnUnreachableAgent() async throws {
        let dead = try DeadPort()
        defer { dead.close() }
        let client = TallyClient(port: dead.port, timeout: .seconds(5))
        do throws(TallyClientError) {
            _ = try await client.send([event(1)])
            Issue.record("an agent on a closed port answered")
        } catch {
            guard case .unreachable(.cannotConnect) = error else {
                Issue.record("expected unreachable(cannotConnect), got \(error)")
                return
            }
        }
    }

    @Test func middlewareMetersEachRequest() async throws {
        let agent = try await TestAgent.start()
        let router = Router()
        router.add(
            middleware: TallyMeteringMiddleware(
                client: TallyClient(port: agent.port, timeout: TestAgent.clientTimeout), tenantHeader: "X-Tenant-Id", bytesOutMetric: "bytes_out"))
        router.get("/search/:term") { _, _ in "found" }
        let app = Application(router: router)
        try await app.test(.router) { client in
            try await client.execute(
                uri: "/search/cats", method: .get, headers: [.init("X-Tenant-Id")!: "acme", .init("X-Request-Id")!: "r-1"]
            ) { response in
                #expect(response.status == .ok)
            }
            try await client.execute(uri: "/missing", method: .get, headers: [.init("X-Tenant-Id")!: "globex"]) { response in
                #expect(response.status == .notFound)
            }
            // No tenant header: not metered.
            try await client.execute(uri: "/search/dogs", method: .get) { _ in }
        }
        let batch = try await agent.agent.spool.readFromAcknowledged()
        let calls = batch.events.filter { $0.metric == "api_calls" }
        #expect(calls.count == 2)
        let first = calls.first { $0.tenant == "acme" }
        #expect(first?.id == "r-1")
        #expect(first?.properties["endpoint"] == "/search/{term}")
        #expect(first?.properties["method"] == "GET")
        #expect(first?.properties["status"] == "200")
        #expect(calls.first { $0.tenant == "globex" }?.properties["status"] == "404")
        #expect(batch.events.contains { $0.metric == "bytes_out" && $0.tenant == "acme" && $0.quantity == Quantity(5) })
        await agent.stop()
    }
}
