public import Hummingbird
import Logging
import NIOCore
public import Prometheus

/// The collector's HTTP side (default 127.0.0.1:7480): health, readiness, Prometheus metrics, and
/// the usage, charges and invoice API.
public enum CollectorHTTP {
    /// The router with every route; `api` adds the routes that read the ledger.
    public static func router(registry: PrometheusCollectorRegistry, ready: @escaping @Sendable () -> Bool) -> Router<BasicRequestContext> {
        let router = Router()
        router.get("healthz") { _, _ in "ok\n" }
        router.get("readyz") { _, _ -> Response in
            ready()
                ? Response(status: .ok, body: .init(byteBuffer: ByteBuffer(string: "ready\n")))
                : Response(status: .serviceUnavailable, body: .init(byteBuffer: ByteBuffer(string: "starting\n")))
        }
        router.get("metrics") { _, _ -> Response in
            var bytes: [UInt8] = []
            registry.emit(into: &bytes)
            return Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
        }
        return router
    }
}
