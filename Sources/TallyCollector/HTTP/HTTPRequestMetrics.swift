public import CoreMetrics
public import Hummingbird
import TallyCore

/// Times and counts every request to the collector's HTTP API, by route: the histogram
/// `tally_collector_http_request_seconds` (label `route`) and the counter
/// `tally_collector_http_requests_total` (labels `route`, `status`; 401 and 403 are refused
/// keys). The route is the router's pattern (`/v1/tenants/{tenant}/charges`), never the path
/// as sent, so a client cannot grow the label set; a path no route matches counts as
/// `unmatched`.
public struct HTTPRequestMetrics<Context: RequestContext>: RouterMiddleware {
    private let factory: any MetricsFactory

    /// Records through `factory` (the bootstrapped one unless a test gives its own).
    public init(factory: any MetricsFactory = MetricsSystem.factory) {
        self.factory = factory
    }

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let start = ContinuousClock.now
        do {
            let response = try await next(request, context)
            record(context, status: Int(response.status.code), since: start)
            return response
        } catch {
            let status = (error as? any HTTPResponseError)?.status.code ?? 500
            record(context, status: Int(status), since: start)
            throw error
        }
    }

    private func record(_ context: Context, status: Int, since start: ContinuousClock.Instant) {
        // The router names the matched route once it has found it ("NotFound" when none matched).
        record(route: context.endpointPath.flatMap { $0 == "NotFound" ? nil : $0 } ?? "unmatched", status: status, since: start)
    }

    /// Records a request answered outside the router (``DirectReads``), under its route's pattern.
    public func record(route: String, status: Int, since start: ContinuousClock.Instant) {
        let route = ("route", route)
        CoreMetrics.Timer(label: "tally_collector_http_request_seconds", dimensions: [route], factory: factory)
            .recordNanoseconds((ContinuousClock.now - start).nanoseconds)
        CoreMetrics.Counter(label: "tally_collector_http_requests_total", dimensions: [route, ("status", String(status))], factory: factory)
            .increment()
    }
}
