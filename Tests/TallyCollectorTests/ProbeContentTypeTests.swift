import Hummingbird
import HummingbirdTesting
import Prometheus
import Synchronization
import Testing

@testable import TallyCollector

/// The probes name their media type as protocol/openapi.yaml says. Found by schemathesis:
/// `/readyz` answered `ready` (and `not ready: …`) with no Content-Type at all.
@Suite struct ProbeContentTypeTests {
    @Test func probesAreTextPlainReadyOrNot() async throws {
        let readiness = Mutex(CollectorHTTP.Readiness.ready)
        let router = CollectorHTTP.router(registry: PrometheusCollectorRegistry(), readiness: { readiness.withLock { $0 } })
        try await Application(router: router).test(.router) { client in
            for path in ["/healthz", "/readyz"] {
                try await client.execute(uri: path, method: .get) { response in
                    #expect(response.status == .ok, "\(path)")
                    #expect(response.headers[.contentType] == "text/plain; charset=utf-8", "\(path): \(response.headers)")
                }
            }
            readiness.withLock { $0 = .notReady(reason: "the disk is full") }
            try await client.execute(uri: "/readyz", method: .get) { response in
                #expect(response.status == .serviceUnavailable)
                #expect(response.headers[.contentType] == "text/plain; charset=utf-8", "\(response.headers)")
                #expect(String(buffer: response.body) == "not ready: the disk is full\n")
            }
        }
    }
}
