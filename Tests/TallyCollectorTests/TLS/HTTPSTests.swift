import Foundation
import Hummingbird
import HummingbirdTLS
import HummingbirdTesting
import Prometheus
import TallyConfig
import TallyCore
import TallyTLS
import Testing

@testable import TallyCollector

@Suite("HTTPS: the collector's API and exports")
struct HTTPSTests {
    let pki: TestPKI

    init() throws { pki = try TestPKI.shared.get() }

    @Test func theHTTPAPIAnswersOverHTTPSOnly() async throws {
        var config = CollectorConfig()
        config.store = "sqlite:" + (try tlsTemporaryDirectory()) + "/ledger.db"
        config.listen = HostPort(host: "127.0.0.1", port: 0)
        config.http = HostPort(host: "127.0.0.1", port: 0)
        config.httpTLS = pki.serverFiles(TestPKI.good)
        config.adminKey = "admin-key-for-tls-tests"
        let collector = try await Collector.start(config: config, registry: PrometheusCollectorRegistry(), logger: tlsTestLogger)
        let (ports, sink) = AsyncStream.makeStream(of: Int.self)
        let running = Task { try await collector.run(httpBound: { sink.yield($0) }) }
        var iterator = ports.makeAsyncIterator()
        let port = try #require(await iterator.next())
        let trust = try ClientTLS(ClientTLSFiles(ca: pki.ca), place: "test")

        let health = try await MinimalHTTPClient.request(method: .GET, url: "https://127.0.0.1:\(port)/healthz", tls: trust)
        #expect(health.status == 200 && health.body == "ok\n")
        let usage = try await MinimalHTTPClient.request(
            method: .GET, url: "https://localhost:\(port)/v1/usage?tenant=acme&metric=api_calls",
            headers: [("Authorization", "Bearer admin-key-for-tls-tests")], tls: trust)
        #expect(usage.status == 200, "\(usage.body)")
        // Plain HTTP to the HTTPS port gets no answer; a client that trusts another CA refuses it.
        await #expect(throws: MinimalHTTPClient.Failure.self) {
            _ = try await MinimalHTTPClient.request(method: .GET, url: "http://127.0.0.1:\(port)/healthz")
        }
        let stranger = try ClientTLS(ClientTLSFiles(ca: pki.otherCA), place: "test")
        await #expect(throws: MinimalHTTPClient.Failure.self) {
            _ = try await MinimalHTTPClient.request(method: .GET, url: "https://127.0.0.1:\(port)/healthz", tls: stranger)
        }
        running.cancel()
        _ = await running.result
    }

    @Test func plainHTTPFromAPeerNotOnLoopbackIsRefusedButProbesAnswer() async throws {
        let router = CollectorHTTP.router(registry: PrometheusCollectorRegistry(), readiness: { .ready }, refusePlaintextRemote: true)
        // The router test client has no peer address: not known to be loopback, so refused.
        try await Application(router: router).test(.router) { client in
            try await client.execute(uri: "/metrics", method: .get) { #expect($0.status == .forbidden) }
            try await client.execute(uri: "/healthz", method: .get) { #expect($0.status == .ok) }
            try await client.execute(uri: "/readyz", method: .get) { #expect($0.status == .ok) }
        }
        let open = CollectorHTTP.router(registry: PrometheusCollectorRegistry(), readiness: { .ready }, refusePlaintextRemote: false)
        try await Application(router: open).test(.router) { client in
            try await client.execute(uri: "/metrics", method: .get) { #expect($0.status == .ok) }
        }
    }

    @Test func anExportGoesToAnHTTPSPlatformWhoseCertificateChecksOut() async throws {
        let fixture = try BillingFixture(now: "2026-03-10T00:00:00Z")
        try await fixture.commit([try BillingFixture.event("acme", 4, at: "2026-03-02T10:05:00Z", id: "1")])
        let platform = MockPlatform()
        let serverTLS = try ServerTLS(pki.serverFiles(TestPKI.good), place: "test")
        let march = try #require(BillingPeriod("2026-03"))
        try await platform.application(server: try .tls(.http1(), tlsConfiguration: serverTLS.configuration)).test(.live) { client in
            let port = try #require(client.port)
            // A platform certificate from a CA the exporter does not trust: nothing is sent.
            let distrusting = MeterEventExporter(
                service: fixture.service,
                settings: .init(
                    baseURL: "https://127.0.0.1:\(port)", maxAttempts: 1,
                    tls: try ClientTLS(ClientTLSFiles(ca: pki.otherCA), place: "test")))
            let refused = try await distrusting.export(period: march, now: fixture.now)
            #expect(refused.sent == 0 && refused.failed == 1)
            #expect(platform.state.withLock { $0.requests } == 0)

            let exporter = MeterEventExporter(
                service: fixture.service,
                settings: .init(
                    baseURL: "https://localhost:\(port)", maxAttempts: 2, initialBackoff: .milliseconds(1),
                    tls: try ClientTLS(ClientTLSFiles(ca: pki.ca), place: "test")))
            let report = try await exporter.export(period: march, now: fixture.now)
            #expect(report.sent == 1 && report.failed == 0)
            #expect(platform.state.withLock { $0.values } == ["tally-acme-api_calls-2026-03-02T10:00:00Z-r1": "4"])
        }
        await fixture.shutdown()
    }

    @Test func urlsAreHTTPSOrLoopbackHTTP() throws {
        let secure = try MinimalHTTPClient.parse(url: "https://api.stripe.com/v1/x")
        #expect(secure == .init(secure: true, host: "api.stripe.com", port: 443, path: "/v1/x"))
        let local = try MinimalHTTPClient.parse(url: "http://[::1]:8080")
        #expect(local == .init(secure: false, host: "::1", port: 8080, path: "/"))
        #expect(throws: MinimalHTTPClient.Failure.self) { try MinimalHTTPClient.parse(url: "ftp://x") }
        #expect(throws: MinimalHTTPClient.Failure.self) { try MinimalHTTPClient.parse(url: "https://x:99999") }
    }
}
