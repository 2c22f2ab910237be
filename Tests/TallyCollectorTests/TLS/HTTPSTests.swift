import Foundation
import Hummingbird
import HummingbirdTLS
import HummingbirdTesting
import NIOCore
import Prometheus
@testable import TallyClient
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
        let (running, port) = try await startCollectorServingHTTP(config)
        let trust = try ClientTLS(ClientTLSFiles(ca: pki.ca), place: "test")

        let health = try await get("https://127.0.0.1:\(port)/healthz", tls: trust)
        #expect(health.status == 200 && health.text == "ok\n")
        let usage = try await get(
            "https://localhost:\(port)/v1/usage?tenant=acme&metric=api_calls", headers: [("Authorization", "Bearer admin-key-for-tls-tests")],
            tls: trust)
        #expect(usage.status == 200, "\(usage.text)")
        // Plain HTTP to the HTTPS port gets no answer; a client that trusts another CA refuses it.
        await #expect(throws: HTTPExchangeError.self) { _ = try await get("http://127.0.0.1:\(port)/healthz", tls: nil) }
        let stranger = try ClientTLS(ClientTLSFiles(ca: pki.otherCA), place: "test")
        do {
            _ = try await get("https://127.0.0.1:\(port)/healthz", tls: stranger)
            Issue.record("a server whose certificate does not chain to the trusted CA was answered")
        } catch let error as HTTPExchangeError {
            guard case .refused = error else {
                Issue.record("expected the TLS handshake to refuse the server, got \(error)")
                return
            }
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
        let secure = try HTTPExchange.Target(url: "https://api.stripe.com/v1/x")
        #expect(secure == .init(secure: true, host: "api.stripe.com", port: 443, path: "/v1/x"))
        let local = try HTTPExchange.Target(url: "http://[::1]:8080")
        #expect(local == .init(secure: false, host: "::1", port: 8080, path: "/"))
        let query = try HTTPExchange.Target(url: "http://localhost:7480?x=1")
        #expect(query == .init(secure: false, host: "localhost", port: 7480, path: "/?x=1"))
        #expect(throws: HTTPExchangeError.self) { try HTTPExchange.Target(url: "ftp://x") }
        #expect(throws: HTTPExchangeError.self) { try HTTPExchange.Target(url: "https://x:99999") }
        #expect(throws: HTTPExchangeError.self) { try HTTPExchange.Target(url: "https://[::1]x/") }
    }

    /// `http://` goes to loopback only: the rule is checked on the address connected to, before
    /// anything is written, and `allowPlaintextRemote` lifts it.
    @Test func plainHTTPGoesToLoopbackOnly() throws {
        let policy = PlaintextPolicy(allowRemote: false)
        #expect(throws: Never.self) { try policy.admit(peer: try SocketAddress(ipAddress: "127.0.0.1", port: 80)) }
        #expect(throws: Never.self) { try policy.admit(peer: try SocketAddress(ipAddress: "::1", port: 80)) }
        #expect(throws: PlaintextRefused.self) { try policy.admit(peer: try SocketAddress(ipAddress: "192.0.2.7", port: 80)) }
        #expect(throws: PlaintextRefused.self) { try policy.admit(peer: nil) }
        #expect(throws: Never.self) { try PlaintextPolicy(allowRemote: true).admit(peer: try SocketAddress(ipAddress: "192.0.2.7", port: 80)) }
        let exchange = try HTTPExchange(url: try HTTPExchange.Target(url: "http://example.com:8080/x"), tls: nil, allowPlaintextRemote: false)
        #expect(exchange.security is PlaintextPolicy && exchange.security?.isEncrypted == false)
        #expect(exchange.head(method: "GET", path: "/x", headers: [], bodyBytes: nil).headers["Host"] == ["example.com:8080"])
        let secure = try HTTPExchange(url: try HTTPExchange.Target(url: "https://[::1]/x"), tls: nil, allowPlaintextRemote: false)
        #expect(secure.security?.isEncrypted == true)
        #expect(secure.head(method: "POST", path: "/x", headers: [], bodyBytes: nil).headers["Host"] == ["[::1]"])
        #expect(secure.head(method: "POST", path: "/x", headers: [], bodyBytes: nil).headers["Content-Length"] == ["0"])
    }
}

/// One GET with Tally's HTTP client, secured as the URL says.
private func get(_ url: String, headers: [(String, String)] = [], tls: ClientTLS?) async throws -> HTTPExchange.Response {
    let target = try HTTPExchange.Target(url: url)
    return try await HTTPExchange(url: target, tls: tls, allowPlaintextRemote: false).request(method: "GET", path: target.path, headers: headers)
}
