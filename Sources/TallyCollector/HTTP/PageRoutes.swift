import Foundation
import Hummingbird
import NIOCore
import TallyCore
import TallyLedger

/// The pages for people: `GET /ui` (the admin overview, admin key only),
/// `GET /ui/tenants/{tenant}` (a tenant's usage; the admin key or that tenant's key) and
/// `GET /ui/tenants/{tenant}/invoices/{period}` (its invoice, as the API serves it) and
/// `GET /ui/tenants/{tenant}/trace` (one event, traced: ``TracePage``). They take
/// the same keys as the API, which a browser sends as Basic credentials after the 401's
/// challenge; errors are small HTML pages. Every page forbids scripts, frames and anything
/// loaded from elsewhere (`Content-Security-Policy`), and is never cached.
extension CollectorAPI {
    func addPageRoutes(to router: Router<TallyRequestContext>) {
        router.get("ui") { request, context in
            await respondWithPage {
                guard try grant(request, context) == .everything else {
                    throw APIError(.forbidden, "the overview of every tenant needs the admin key")
                }
                let query = try formQuery(request)
                let wanted = try overviewRequest(query)
                let overview = try await service.overview(period: wanted.period, search: wanted.search)
                return AdminOverviewPage.html(overview, wanted)
            }
        }
        router.get("ui/tenants/:tenant") { request, context in
            await respondWithPage {
                let tenant = try pathTenant(context)
                let access = try grant(request, context)
                try access.check(tenant: tenant)
                let query = try formQuery(request)
                var period = BillingPeriod(containing: service.clock())
                if let text = query.get("period") { period = try parsePeriod(text) }
                let day = try query.get("day").map(parseDay)
                let content = try await TenantPage.read(
                    service: service, tenant: tenant, period: period, day: day, linksToOverview: access == .everything)
                return TenantPage.html(content)
            }
        }
        router.get("ui/tenants/:tenant/trace") { request, context in
            await respondWithPage {
                let tenant = try pathTenant(context)
                try grant(request, context).check(tenant: tenant)
                let query = try formQuery(request)
                let id = query.get("id").flatMap { $0.isEmpty ? nil : $0 }
                let fingerprint = query.get("fingerprint").flatMap { $0.isEmpty ? nil : $0 }
                guard id != nil || fingerprint != nil else { return TracePage.html(tenant: tenant, search: "", report: nil) }
                let trace = try TraceQuery.parse(
                    tenant: tenant, id: id, fingerprint: fingerprint, period: query.get("period"), from: query.get("from"),
                    to: query.get("to"), now: service.clock())
                return TracePage.html(tenant: tenant, search: id ?? "", report: try await service.trace(trace))
            }
        }
        // The invoice downloads the tenant page links to: `/v1/tenants/{tenant}/invoices/{period}`
        // (every `format`) under the pages' path, so a browser asks for the key here too and
        // sends the one it was given for the page.
        router.get("ui/tenants/:tenant/invoices/:period") { request, context in
            let tenant: String
            do {
                tenant = try pathTenant(context)
                try grant(request, context).check(tenant: tenant)
            } catch {
                return await respondWithPage { throw error }
            }
            return await respond {
                let period = try parsePeriod(context.parameters.get("period") ?? "")
                return try invoiceResponse(try await service.invoice(tenant: tenant, period: period), request)
            }
        }
    }

    /// `/ui`'s parameters: `period` (YYYY-MM, default the current month), `q` (part of a tenant
    /// name), `sort` (`tenant`, `charges`, `metric:NAME`), `order` (`asc`, `desc`), `page` (from 1).
    func overviewRequest(_ query: FormQuery) throws -> OverviewRequest {
        var request = OverviewRequest(period: BillingPeriod(containing: service.clock()))
        if let text = query.get("period"), !text.isEmpty { request.period = try parsePeriod(text) }
        request.search = (query.get("q") ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
        request.order = try OverviewOrder(sort: query.get("sort"), order: query.get("order"), metrics: service.pricing?.config.metrics ?? [])
        if let text = query.get("page"), !text.isEmpty {
            guard let page = Int(text), page >= 1 else {
                throw APIError(.badRequest, "page must be a whole number from 1, not '\(text)'", parameter: "page")
            }
            request.page = page
        }
        return request
    }

    /// A day as `YYYY-MM-DD`: its first instant (UTC).
    func parseDay(_ text: String) throws(APIError) -> EventTime {
        guard text.utf8.count == 10, let time = try? EventTime(parsing: text + "T00:00:00Z") else {
            throw APIError(.badRequest, "'\(text)' is not a day: use YYYY-MM-DD", parameter: "day")
        }
        return time
    }
}

/// Runs a page handler: its HTML with the page headers, or the error as a small HTML page with
/// its status (and, for a 401, the challenge that makes a browser ask for the key).
func respondWithPage(_ body: () async throws -> String) async -> Response {
    let failure: APIError
    do {
        return page(.ok, try await body())
    } catch let error as APIError {
        failure = error
    } catch let error as BillingError {
        failure = APIError(error)
    } catch {
        failure = APIError(.internalServerError, "\(error)")
    }
    let h = PageLayout.h
    var response = page(
        failure.status,
        PageLayout.page(
            title: "\(failure.status.code) \(failure.status.reasonPhrase)",
            body:
                "<h1>\(failure.status.code) \(h(failure.status.reasonPhrase))</h1>\n<p>\(h(failure.message))</p>\n<p><a href=\"/ui\">Overview</a></p>"
        ))
    if failure.status == .unauthorized { response.headers[.wwwAuthenticate] = APIAccess.challenge }
    return response
}

/// An HTML page with the headers every page carries.
func page(_ status: HTTPResponse.Status, _ html: String) -> Response {
    var headers: HTTPFields = [.contentType: "text/html; charset=utf-8", .cacheControl: "no-store"]
    if let policy = HTTPFields.Element.Name("Content-Security-Policy") {
        headers[policy] =
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    }
    if let options = HTTPFields.Element.Name("X-Content-Type-Options") { headers[options] = "nosniff" }
    if let referrer = HTTPFields.Element.Name("Referrer-Policy") { headers[referrer] = "no-referrer" }
    return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: html)))
}
