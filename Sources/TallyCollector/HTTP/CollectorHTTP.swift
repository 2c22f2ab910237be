import Foundation
public import Hummingbird
import Logging
import NIOCore
public import Prometheus
import TallyCore
import TallyLedger
import TallyTLS

/// The collector's HTTP side (default 127.0.0.1:7480): health, readiness, Prometheus metrics, and
/// the usage, charges, invoice, reconciliation and report API, plus the pages for people: the
/// admin overview (`/ui`) and each tenant's usage page (`/ui/tenants/{tenant}`).
/// Every answer comes from the aggregates and counters, never from a raw-event scan.
public enum CollectorHTTP {
    /// Whether the collector can take batches now, and if not, why.
    public enum Readiness: Sendable, Hashable {
        case ready
        case notReady(reason: String)
    }

    /// The header that carries a final invoice's SHA-256 (hex), on every format of it.
    public static let invoiceSHA256Header = "Tally-Invoice-SHA256"

    /// The router with every route; `api` adds the routes that read the ledger. `/readyz`
    /// answers 200 `ready` or 503 `not ready: REASON`, from `readiness` at each request. With
    /// `refusePlaintextRemote` (plain HTTP without allow_plaintext_remote) a peer not on loopback
    /// gets 403 for everything but `/healthz` and `/readyz`, which carry no usage. Every request
    /// is timed and counted by route (`requestMetrics`); `beforeScrape` refreshes gauges read
    /// from outside (the ledger's filesystem) before `/metrics` answers.
    public static func router(
        registry: PrometheusCollectorRegistry, readiness: @escaping @Sendable () -> Readiness, api: CollectorAPI? = nil,
        refusePlaintextRemote: Bool = false, requestMetrics: HTTPRequestMetrics<TallyRequestContext> = HTTPRequestMetrics(),
        beforeScrape: @escaping @Sendable () -> Void = {}
    ) -> Router<TallyRequestContext> {
        let router = Router(context: TallyRequestContext.self)
        router.add(middleware: requestMetrics)
        if refusePlaintextRemote { router.add(middleware: PlaintextRemoteRefusal()) }
        router.get("healthz") { _, _ in "ok\n" }
        router.get("readyz") { _, _ -> Response in
            let plain: HTTPFields = [.contentType: "text/plain; charset=utf-8"]
            switch readiness() {
            case .ready:
                return Response(status: .ok, headers: plain, body: .init(byteBuffer: ByteBuffer(string: "ready\n")))
            case .notReady(let reason):
                return Response(
                    status: .serviceUnavailable, headers: plain, body: .init(byteBuffer: ByteBuffer(string: "not ready: \(reason)\n")))
            }
        }
        router.get("metrics") { _, _ -> Response in
            beforeScrape()
            var bytes: [UInt8] = []
            registry.emit(into: &bytes)
            return Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
        }
        if let api { api.addRoutes(to: router) }
        return router
    }
}

/// Plain HTTP is for loopback: a remote peer would read usage (and send its API key) in clear
/// text. Probes (`/healthz`, `/readyz`) stay open: they carry no usage.
struct PlaintextRemoteRefusal: RouterMiddleware {
    typealias Context = TallyRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let probe = request.uri.path == "/healthz" || request.uri.path == "/readyz"
        if probe || context.remoteAddress.map(PeerAddress.isLoopback) == true {
            return try await next(request, context)
        }
        context.logger.notice("refused a plain HTTP request from a non-loopback peer: configure tls.http (or allow_plaintext_remote)")
        return errorResponse(APIError(.forbidden, "this collector serves plain HTTP to loopback only: use HTTPS (tls.http)"))
    }
}

/// The ledger-reading routes and what they need.
public struct CollectorAPI: Sendable {
    public let service: Invoicing
    public let access: APIAccess

    public init(service: Invoicing, access: APIAccess) {
        self.service = service
        self.access = access
    }

    func addRoutes(to router: Router<TallyRequestContext>) {
        // These three are also answered by `DirectReads` (`answerNow(_:)`) when the ledger can
        // answer them on the event loop: the same parsing, checks and answers.
        router.get("v1/usage") { request, context in
            await respond {
                let query = try usageQuery(try formQuery(request), authorization: request.headers[.authorization], context.remoteAddress)
                return try usageAnswer(query, try await service.usage(query)).response
            }
        }
        router.get("v1/tenants/:tenant/charges") { request, context in
            await respond {
                let tenant = try pathTenant(context)
                try grant(request, context).check(tenant: tenant)
                return try invoiceResponse(try await service.charges(tenant: tenant), request)
            }
        }
        router.get("v1/tenants/:tenant/invoices/:period") { request, context in
            await respond {
                let tenant = try pathTenant(context)
                try grant(request, context).check(tenant: tenant)
                let period = try parsePeriod(context.parameters.get("period") ?? "")
                return try invoiceResponse(try await service.invoice(tenant: tenant, period: period), request)
            }
        }
        router.get("v1/reconciliation") { request, context in await respond { try await reconciliation(request, context) } }
        router.post("v1/corrections") { request, context in
            await respond {
                guard try grant(request, context) == .everything else {
                    throw APIError(.forbidden, "corrections need the admin key")
                }
                let body: ByteBuffer
                do { body = try await request.body.collect(upTo: 1 << 20) } catch {
                    throw APIError(.contentTooLarge, "a correction order is at most 1 MiB of JSON")
                }
                let order = try CorrectionOrder.parse(Array(body.readableBytesView), now: service.clock())
                return try json(try await service.correct(order, actor: try actor(request)))
            }
        }
        router.get("v1/events/trace") { request, context in
            await respond {
                let query = try formQuery(request)
                let tenant = query.get("tenant")
                if let tenant, !tenant.isEmpty { try grant(request, context).check(tenant: tenant) } else { _ = try grant(request, context) }
                let trace = try TraceQuery.parse(
                    tenant: tenant, id: query.get("id"), fingerprint: query.get("fingerprint"), period: query.get("period"),
                    from: query.get("from"), to: query.get("to"), now: service.clock())
                return try json(try await service.trace(trace))
            }
        }
        router.get("v1/reports/:file") { request, context in
            await respond {
                let file = context.parameters.get("file") ?? ""
                guard file.hasSuffix(".csv") else { throw APIError(.notFound, "reports are served as PERIOD.csv", parameter: "period") }
                let period = try parsePeriod(String(file.dropLast(4)))
                let tenants: [String]
                switch try grant(request, context) {
                case .everything: tenants = try await service.tenants(in: period)
                case .tenant(let own): tenants = [own]
                }
                return text(try await UsageReport.csv(service: service, period: period, tenants: tenants), "text/csv; charset=utf-8")
            }
        }
        addPageRoutes(to: router)
    }

    // MARK: Routes

    /// The usage query a request asks, once its key may read the tenant.
    func usageQuery(_ query: FormQuery, authorization: String?, _ remote: SocketAddress?) throws(APIError) -> UsageQuery {
        guard let tenant = query.get("tenant"), !tenant.isEmpty else { throw APIError(.badRequest, "tenant is required", parameter: "tenant") }
        try access.grant(authorization: authorization, remote: remote).check(tenant: tenant)
        guard let metric = query.get("metric"), !metric.isEmpty else { throw APIError(.badRequest, "metric is required", parameter: "metric") }
        let now = service.clock()
        let from = try query.get("from").map { text throws(APIError) in try parseTime(text, "from") } ?? BillingPeriod(containing: now).start
        let to = try query.get("to").map { text throws(APIError) in try parseTime(text, "to") } ?? BillingPeriod(containing: now).end
        guard from < to else { throw APIError(.badRequest, "from must be before to", parameter: "from") }
        let granularityText = query.get("granularity") ?? "day"
        guard let granularity = UsageQuery.Granularity(rawValue: granularityText) else {
            throw APIError(.badRequest, "granularity must be hour, day or month, not '\(granularityText)'", parameter: "granularity")
        }
        let groupBy = query.get("group_by").flatMap { $0.isEmpty ? nil : $0 }
        return UsageQuery(tenant: tenant, metric: metric, from: from, to: to, granularity: granularity, groupBy: groupBy)
    }

    func usageAnswer(_ query: UsageQuery, _ buckets: [UsageBucket]) throws -> APIAnswer {
        let body = UsageAnswer(
            tenant: query.tenant, metric: query.metric, from: query.from.description, to: query.to.description,
            granularity: query.granularity.rawValue, groupBy: query.groupBy,
            buckets: buckets.map {
                .init(
                    start: $0.start.description, group: $0.group, sum: $0.aggregate.sum.description, count: $0.aggregate.count,
                    max: $0.aggregate.max.description, latest: $0.aggregate.latest.quantity.description)
            })
        return APIAnswer(json: try JSONWriter.encode(body))
    }

    private func reconciliation(_ request: Request, _ context: TallyRequestContext) async throws -> Response {
        let query = try formQuery(request)
        var filter = ReconciliationFilter()
        if let period = query.get("period") { filter.period = try parsePeriod(period) }
        filter.agent = query.get("agent")
        filter.tenant = query.get("tenant")
        switch try grant(request, context) {
        case .everything: break
        case .tenant(let own):
            if let asked = filter.tenant, asked != own { try APIAccess.Grant.tenant(own).check(tenant: asked) }
            filter.tenant = own
        }
        let (rows, unreadable) = try await service.reconciliation(filter)
        var total = rows.total
        for row in unreadable { total.add(row.counts) }
        let answer = ReconciliationAnswer(
            rows: rows.map(ReconciliationAnswer.Row.init), unreadable: unreadable.map(ReconciliationAnswer.Row.init),
            total: .init(total))
        return try json(answer)
    }

    // MARK: Helpers

    func grant(_ request: Request, _ context: TallyRequestContext) throws(APIError) -> APIAccess.Grant {
        try access.grant(authorization: request.headers[.authorization], remote: context.remoteAddress)
    }

    /// Who made an admin request, for the audit trail: `admin:` and the first 8 hex digits of the
    /// key's SHA-256 (never the key), or `loopback` for a keyless read from this machine.
    func actor(_ request: Request) throws(APIError) -> String {
        guard let authorization = request.headers[.authorization] else { return "loopback" }
        return "admin:" + String(SHA256Digest.hex(try APIAccess.key(authorization)).prefix(8))
    }

    func pathTenant(_ context: TallyRequestContext) throws(APIError) -> String {
        try pathTenant(raw: context.parameters.get("tenant"))
    }

    func pathTenant(raw: String?) throws(APIError) -> String {
        // Path parameters arrive percent-encoded: `/v1/tenants/a%20b` is the tenant "a b". Most
        // carry no `%`, and Foundation's decoding of one was a thirtieth of a charges read.
        guard let raw, let tenant = raw.utf8.contains(UInt8(ascii: "%")) ? raw.removingPercentEncoding : raw, !tenant.isEmpty else {
            throw APIError(.badRequest, "tenant is required and must be valid percent-encoded UTF-8", parameter: "tenant")
        }
        return tenant
    }

    func parsePeriod(_ text: String) throws(APIError) -> BillingPeriod {
        guard let period = BillingPeriod(text) else {
            throw APIError(.badRequest, "'\(text)' is not a period: use YYYY-MM", parameter: "period")
        }
        return period
    }

    private func parseTime(_ text: String, _ name: String) throws(APIError) -> EventTime {
        do { return try EventTime(parsing: text) } catch { throw APIError(.badRequest, "\(error)", parameter: name) }
    }

    /// An invoice as `json` (the view: status, hash and the invoice's JSON embedded byte for byte),
    /// `document` (the invoice's JSON alone: for a final invoice exactly the bytes its SHA-256 is
    /// taken over), `csv` or `html`. A final invoice's SHA-256 is also in the
    /// `Tally-Invoice-SHA256` header of each.
    func invoiceResponse(_ view: InvoiceView, _ request: Request) throws -> Response {
        try invoiceAnswer(view, try formQuery(request), accept: request.headers[.accept]).response
    }

    func invoiceAnswer(_ view: InvoiceView, _ query: FormQuery, accept: String?) throws -> APIAnswer {
        let accept = accept ?? ""
        let format = query.get("format") ?? (accept.contains("text/csv") ? "csv" : accept.contains("text/html") ? "html" : "json")
        var answer: APIAnswer
        switch format {
        case "json": answer = APIAnswer(json: view.canonicalText())
        case "document": answer = APIAnswer(body: view.invoiceJSON.text, contentType: "application/json")
        case "csv": answer = APIAnswer(body: InvoiceRendering.csv(view), contentType: "text/csv; charset=utf-8")
        case "html": answer = APIAnswer(body: InvoiceRendering.htmlPage(view), contentType: "text/html; charset=utf-8")
        default: throw APIError(.badRequest, "format must be json, document, csv or html, not '\(format)'", parameter: "format")
        }
        answer.invoiceSHA256 = view.sha256
        return answer
    }
}

/// A 200 answer of a read, before it is sent: as Hummingbird's `Response`, or written on the
/// event loop by ``DirectReads``.
struct APIAnswer: Sendable {
    var body: String
    var contentType: String
    /// A final invoice's SHA-256 (the `Tally-Invoice-SHA256` header).
    var invoiceSHA256: String?

    init(body: String, contentType: String) {
        self.body = body
        self.contentType = contentType
    }

    init(json: String) { self.init(body: json, contentType: "application/json") }

    var response: Response {
        var response = text(body, contentType)
        if let invoiceSHA256, let name = HTTPFields.Element.Name(CollectorHTTP.invoiceSHA256Header) {
            response.headers[name] = invoiceSHA256
        }
        return response
    }
}

/// Runs a handler, turning every error into a JSON error response.
func respond(_ body: () async throws -> Response) async -> Response {
    do {
        return try await body()
    } catch let error as APIError {
        return errorResponse(error)
    } catch let error as BillingError {
        return errorResponse(APIError(error))
    } catch {
        return errorResponse(APIError(.internalServerError, "\(error)"))
    }
}

func errorResponse(_ error: APIError) -> Response {
    struct Body: Encodable {
        struct Detail: Encodable {
            var status: Int
            var parameter: String?
            var message: String
        }
        var error: Detail
    }
    let body = Body(error: .init(status: error.status.code, parameter: error.parameter, message: error.message))
    let text = (try? JSONWriter.encode(body)) ?? "{\"error\":{\"message\":\"unencodable error\"}}"
    return Response(
        status: error.status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: text)))
}

/// A JSON answer, written by Tally's one JSON writer (canonical: keys sorted, no whitespace).
func json(_ value: some Encodable) throws -> Response {
    text(try JSONWriter.encode(value), "application/json")
}

func text(_ text: String, _ type: String) -> Response {
    Response(status: .ok, headers: [.contentType: type], body: .init(byteBuffer: ByteBuffer(string: text)))
}

/// `GET /v1/usage` answer.
struct UsageAnswer: Codable {
    struct Bucket: Codable {
        var start: String
        var group: String?
        var sum: String
        var count: Int64
        var max: String
        var latest: String
    }
    var tenant: String
    var metric: String
    var from: String
    var to: String
    var granularity: String
    var groupBy: String?
    var buckets: [Bucket]
}

/// `GET /v1/reconciliation` answer: rows, the stored rows whose period cannot be read back
/// (`unreadable`, with the period as stored; reported, never a failure of the whole answer), and
/// the sum of both; `balances` is `received == accepted + duplicate + late + rejected`.
struct ReconciliationAnswer: Codable {
    struct Counts: Codable {
        var received, accepted, duplicate, late, adjusted, rejected: Int64
        var balances: Bool
        init(_ counts: ReconciliationCounts) {
            received = counts.received
            accepted = counts.accepted
            duplicate = counts.duplicate
            late = counts.late
            adjusted = counts.adjusted
            rejected = counts.rejected
            balances = counts.balances
        }
    }
    struct Row: Codable {
        var period: String
        var tenant: String
        var agent: String
        var counts: Counts
        init(_ row: ReconciliationRow) {
            period = row.period.description
            tenant = row.tenant
            agent = row.agent
            counts = Counts(row.counts)
        }
        init(_ row: UnreadableReconciliationRow) {
            period = row.storedPeriod
            tenant = row.tenant
            agent = row.agent
            counts = Counts(row.counts)
        }
    }
    var rows: [Row]
    var unreadable: [Row]
    var total: Counts
}

/// The request's query parameters, decoded as browsers send them (``FormQuery``); a 400 for one
/// that is not valid percent-encoded UTF-8.
func formQuery(_ request: Request) throws(APIError) -> FormQuery {
    try formQuery(request.uri.query)
}

/// The query parameters of a raw query string (the part of the target after `?`).
func formQuery(_ raw: String?) throws(APIError) -> FormQuery {
    let query = FormQuery(raw)
    if let invalid = query.invalid {
        throw APIError(.badRequest, "query parameter \(invalid) is not valid percent-encoded UTF-8", parameter: invalid)
    }
    return query
}
