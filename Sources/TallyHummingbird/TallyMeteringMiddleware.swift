public import Hummingbird
public import Logging
public import TallyClient
import TallyCore

/// Meters every request: one usage event per request, sent to the local Tally agent before the
/// response leaves (so the usage is durable when the caller sees the answer).
///
/// The event: tenant from a configurable header (requests without it are not metered), metric
/// `api_calls` (configurable), quantity 1, the time of the request, and properties `endpoint`
/// (the matched route, or the path), `method` and `status`; optionally a second event of metric
/// `bytes_out` with the response's `Content-Length`. The request id header (if any) becomes the
/// event id, so a retried request is counted once. A failure to reach the agent is logged and
/// does not fail the request.
public struct TallyMeteringMiddleware<Context: RequestContext>: RouterMiddleware {
    public let client: TallyClient
    let tenantHeader: HTTPFields.Element.Name?
    let requestIdHeader: HTTPFields.Element.Name?
    public var metric: String
    /// The metric for response bytes; nil (the default) records none.
    public var bytesOutMetric: String?
    public var logger: Logger

    public init(
        client: TallyClient, tenantHeader: String = "X-Tenant-Id", requestIdHeader: String? = "X-Request-Id", metric: String = "api_calls",
        bytesOutMetric: String? = nil, logger: Logger = Logger(label: "tally.metering")
    ) {
        self.client = client
        self.tenantHeader = HTTPFields.Element.Name(tenantHeader)
        if self.tenantHeader == nil {
            logger.critical("'\(tenantHeader)' is not a valid HTTP header name: no request will be metered")
        }
        self.requestIdHeader = requestIdHeader.flatMap { HTTPFields.Element.Name($0) }
        self.metric = metric
        self.bytesOutMetric = bytesOutMetric
        self.logger = logger
    }

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let tenantHeader, let tenant = request.headers[tenantHeader], !tenant.isEmpty else {
            return try await next(request, context)
        }
        let started = EventTime.now()
        let requestId = requestIdHeader.flatMap { request.headers[$0] }
        do {
            let response = try await next(request, context)
            // The router names the matched route while handling the request.
            let endpoint = context.endpointPath ?? request.uri.path
            await record(
                tenant: tenant, requestId: requestId, at: started, endpoint: endpoint, method: request.method.rawValue,
                status: response.status.code, bytesOut: response.headers[.contentLength].flatMap { Int($0) } ?? response.body.contentLength)
            return response
        } catch {
            let status = (error as? any HTTPResponseError)?.status.code ?? 500
            let endpoint = context.endpointPath ?? request.uri.path
            await record(
                tenant: tenant, requestId: requestId, at: started, endpoint: endpoint, method: request.method.rawValue, status: status,
                bytesOut: nil)
            throw error
        }
    }

    func record(tenant: String, requestId: String?, at time: EventTime, endpoint: String, method: String, status: Int, bytesOut: Int?) async {
        let properties = Properties([("endpoint", endpoint), ("method", method), ("status", String(status))])
        var events = [
            UsageEvent(tenant: tenant, metric: metric, quantity: Quantity(1), timestamp: time, id: requestId, properties: properties)
        ]
        if let bytesOutMetric, let bytesOut {
            events.append(
                UsageEvent(
                    tenant: tenant, metric: bytesOutMetric, quantity: Quantity(Int64(bytesOut)), timestamp: time,
                    id: requestId.map { $0 + "/bytes" }, properties: properties))
        }
        do {
            let outcomes = try await client.send(events)
            for case .rejected(let rejection) in outcomes {
                logger.warning("the Tally agent rejected a usage event", metadata: ["reason": "\(rejection)"])
            }
        } catch {
            logger.error("usage not recorded: \(error)", metadata: ["tenant": "\(tenant)", "endpoint": "\(endpoint)"])
        }
    }
}
