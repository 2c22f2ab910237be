import Foundation
import Hummingbird
import HummingbirdTesting
import TallyCore
import TallyLedger
import TallyPricing
import Testing
@testable import TallyCollector

/// `GET /ui` and the tenant page through the router: who may read them, what they show, that
/// the overview's charges are each tenant's invoice total, and that everything is escaped.
@Suite struct AdminOverviewTests {
    static let pricingYAML = """
        metrics:
          - name: api_calls
            aggregation: sum
            group_by: [endpoint]
          - name: bytes_out
            aggregation: sum
            unit: bytes
          - name: exports
            aggregation: count
            filters:
              - property: status
                not_in: ["500"]
          - name: active_users
            aggregation: unique_count
            property: user
        plans:
          - id: starter
            currency: USD
            charges:
              - flat_fee: "10.00"
                name: Platform fee
              - metric: api_calls
                model: per_unit
                free: 100
                unit_price: "0.01"
              - metric: bytes_out
                model: graduated
                tiers:
                  - up_to: 1000000
                    unit_price: "0.000001"
                  - unit_price: "0.0000005"
              - metric: exports
                model: package
                package_size: 10
                package_price: "1.00"
              - metric: active_users
                model: per_unit
                unit_price: "2.00"
          - id: growth
            currency: USD
            charges:
              - metric: api_calls
                model: per_unit
                unit_price: "0.005"
          - id: pro
            currency: EUR
            charges:
              - metric: api_calls
                price_by: endpoint
                prices:
                  - when: /search
                    model: per_unit
                    unit_price: "0.02"
                  - model: graduated
                    tiers:
                      - up_to: 50
                        unit_price: "0.05"
                      - unit_price: "0.01"
        default_plan: starter
        assignments:
          - tenant: euro-co
            plan: pro
            from: 2026-01-01T00:00:00Z
          - tenant: switcher
            plan: growth
            from: 2026-03-15T00:00:00Z
          - tenant: mixed
            plan: pro
            from: 2026-03-20T00:00:00Z
          - tenant: planned-only
            plan: pro
            from: 2026-03-01T00:00:00Z
        """

    static let attacker = "<script>alert('x')</script>"

    /// March and April of a handful of tenants on every kind of charge, 120 plain tenants, and
    /// a late March event billed in April.
    func fixture() async throws -> BillingFixture {
        let fixture = try BillingFixture(now: "2026-03-25T12:00:00Z", pricingYAML: Self.pricingYAML)
        typealias E = BillingFixture
        var march: [UsageEvent] = [
            try E.event("acme", 150, at: "2026-03-02T10:00:00Z", id: "a1", [("endpoint", "/search")]),
            try E.event("acme", 100, at: "2026-03-03T11:00:00Z", id: "a2", [("endpoint", "/items")]),
            try E.event("acme", metric: "bytes_out", 3_500_000, at: "2026-03-03T11:30:00Z", id: "a3"),
            try E.event("acme", metric: "active_users", at: "2026-03-04T00:00:00Z", id: "a4", [("user", "ann")]),
            try E.event("acme", metric: "active_users", at: "2026-03-05T00:00:00Z", id: "a5", [("user", "bob")]),
            try E.event("acme", metric: "active_users", at: "2026-03-06T00:00:00Z", id: "a6", [("user", "ann")]),
            try E.event("euro-co", 10, at: "2026-03-04T09:00:00Z", id: "e1", [("endpoint", "/search")]),
            try E.event("euro-co", 80, at: "2026-03-04T09:00:00Z", id: "e2", [("endpoint", "/other")]),
            try E.event("switcher", 150, at: "2026-03-10T00:00:00Z", id: "s1"),
            try E.event("switcher", 200, at: "2026-03-16T00:00:00Z", id: "s2"),
            try E.event("mixed", 5, at: "2026-03-10T00:00:00Z", id: "x1"),
            try E.event(Self.attacker, 7, at: "2026-03-10T00:00:00Z", id: "h1"),
        ]
        for index in 0..<25 {
            march.append(try E.event("acme", metric: "exports", at: "2026-03-07T00:00:00Z", id: "x\(index)", [("status", "200")]))
        }
        for index in 0..<5 {
            march.append(try E.event("acme", metric: "exports", at: "2026-03-07T00:00:00Z", id: "f\(index)", [("status", "500")]))
        }
        for index in 0..<120 {
            march.append(try E.event(String(format: "t-%03d", index), Int64(index + 1), at: "2026-03-08T00:00:00Z", id: "t\(index)"))
        }
        try await fixture.commit(march)
        try await fixture.commit([try E.event("acme", 1, at: "2026-03-09T00:00:00Z", id: "edge")], agent: "<b>edge</b>")
        try fixture.setNow("2026-04-05T00:00:00Z")
        try await fixture.commit([
            try E.event("acme", 40, at: "2026-03-30T00:00:00Z", id: "late", [("endpoint", "/items")]),  // March closed: billed in April
            try E.event("acme", 300, at: "2026-04-02T00:00:00Z", id: "a7", [("endpoint", "/items")]),
            try E.event("switcher", 20, at: "2026-04-02T00:00:00Z", id: "s3"),
        ])
        return fixture
    }

    /// The overview's charges are, tenant by tenant, the total of the invoice the API serves —
    /// on the fast path (one plan all period) and the full one (a plan change, adjustments) —
    /// and a tenant that cannot be priced is shown with the reason, not dropped.
    @Test func chargesAreEachTenantsInvoiceTotal() async throws {
        let fixture = try await fixture()
        for month in ["2026-03", "2026-04"] {
            let period = try #require(BillingPeriod(month))
            let overview = try await fixture.service.overview(period: period)
            var priced = 0
            for row in overview.rows {
                do {
                    let invoice = try await fixture.service.invoice(tenant: row.tenant, period: period).invoice
                    #expect(row.charges?.amountText == invoice.total && row.charges?.currency.code == invoice.currency, "\(row.tenant) \(month)")
                    priced += 1
                } catch {
                    #expect(row.charges == nil && row.problem == "\(error)", "\(row.tenant) \(month)")
                }
            }
            #expect(priced >= overview.rows.count - 1)
        }
        let march = try await fixture.service.overview(period: #require(BillingPeriod("2026-03")))
        #expect(march.rows.count == 126)  // 120 + acme, euro-co, switcher, mixed, planned-only, the attacker
        let acme = try #require(march.rows.first { $0.tenant == "acme" })
        // 251 calls by event time (and 40 late ones billed in April, by event time in March).
        #expect(acme.usage.map(\.description) == ["291", "3500000", "25", "2"])
        // $10 fee; 251 calls billed in March, 100 free, at $0.01: $1.51; 1 MB at $0.000001 and
        // 2.5 MB at $0.0000005: $2.25; 25 exports that pass the filter, in packages of 10: $3;
        // 2 distinct users at $2: $4.
        #expect(acme.charges.map(HumanFormat.money) == "$20.76")
        #expect(march.rows.first { $0.tenant == "mixed" }?.problem?.contains("both USD and EUR") == true)
        #expect(march.rows.first { $0.tenant == "planned-only" }?.charges?.amountText == "0.00")
        let april = try await fixture.service.overview(period: #require(BillingPeriod("2026-04")))
        #expect(april.rows.map(\.tenant) == ["acme", "euro-co", "mixed", "planned-only", "switcher"])
        #expect(april.agents.map(\.agent) == ["<b>edge</b>", "edge-1"])
        #expect(april.agents.last?.lastSequence == 3 && april.agents.last?.events.received == 165)
        // By event time: the 163 March events of March and the late one that came in April.
        #expect(march.reconciliation.received == 164 && march.reconciliation.balances)

        // One plan all month and nothing adjusted: the period read alone prices the invoice, with
        // no store at all; with adjustments it cannot, and says so rather than guess.
        let pricing = fixture.pricing
        let reads = try await fixture.writer.read { store throws(LedgerError) in
            (
                try store.periodUsage(pricing.periodUsageQuery(period: period("2026-03"))),
                try store.periodUsage(pricing.periodUsageQuery(period: period("2026-04")))
            )
        }
        let acmeMarch = try #require(reads.0.first { $0.tenant == "acme" })
        #expect(try pricing.invoice(store: acmeMarch, tenant: "acme", period: period("2026-03")).total.amountText == "20.76")
        let acmeApril = try #require(reads.1.first { $0.tenant == "acme" })
        #expect(acmeApril.hasAdjustments)
        #expect(throws: BillingError.self) { try pricing.invoice(store: acmeApril, tenant: "acme", period: period("2026-04")) }
        await fixture.shutdown()
    }

    func period(_ text: String) -> BillingPeriod { BillingPeriod(text) ?? BillingPeriod(containing: EventTime(microseconds: 0)) }

    @Test func onlyTheAdminKeyOpensTheOverview() async throws {
        let fixture = try await fixture()
        try await fixture.application().test(.router) { client in
            try await client.execute(uri: "/ui", method: .get) { response in
                #expect(response.status == .unauthorized)
                #expect(response.headers[.wwwAuthenticate]?.hasPrefix("Basic realm=") == true)
                #expect(response.headers[.contentType]?.hasPrefix("text/html") == true)
                #expect(!response.text.contains("acme"))
            }
            try await client.execute(uri: "/ui", method: .get, headers: bearer(BillingFixture.acmeKey)) { response in
                #expect(response.status == .forbidden)
                #expect(!response.text.contains("euro-co"))
            }
            // The API's 401 stays a plain JSON error (no challenge: URLSession on Linux hangs on
            // one); the invoice a page links to is under /ui, where the browser is asked.
            try await client.execute(uri: "/v1/tenants/acme/charges", method: .get) { response in
                #expect(response.status == .unauthorized && response.headers[.wwwAuthenticate] == nil)
                #expect(response.headers[.contentType] == "application/json")
            }
            try await client.execute(uri: "/ui/tenants/acme/invoices/2026-03?format=csv", method: .get) { response in
                #expect(response.status == .unauthorized && response.headers[.wwwAuthenticate]?.hasPrefix("Basic") == true)
            }
            let acme = "Basic " + Data("acme:\(BillingFixture.acmeKey)".utf8).base64EncodedString()
            try await client.execute(uri: "/ui/tenants/acme/invoices/2026-03?format=csv", method: .get, headers: [.authorization: acme]) { response in
                #expect(response.status == .ok && response.headers[.contentType]?.hasPrefix("text/csv") == true)
                #expect(response.text.contains("acme,2026-03,final,total,total,,,,,,,20.76,"))
            }
            try await client.execute(uri: "/ui/tenants/euro-co/invoices/2026-03", method: .get, headers: [.authorization: acme]) { response in
                #expect(response.status == .forbidden)
            }
            let basic = "Basic " + Data("admin:\(BillingFixture.adminKey)".utf8).base64EncodedString()
            try await client.execute(uri: "/ui?period=2026-03", method: .get, headers: [.authorization: basic]) { response in
                #expect(response.status == .ok)
                let policy = response.headers[try #require(HTTPFields.Element.Name("Content-Security-Policy"))] ?? ""
                #expect(policy.contains("default-src 'none'") && policy.contains("frame-ancestors 'none'"))
                #expect(response.headers[.cacheControl] == "no-store")
                #expect(response.text.contains("<a href=\"/ui/tenants/acme?period=2026-03\">acme</a>"))
            }
        }
        await fixture.shutdown()
    }

    @Test func theOverviewShowsFormattedFiguresEscapedAndPaged() async throws {
        let fixture = try await fixture()
        try await fixture.application().test(.router) { client in
            func get(_ uri: String, _ check: (TestResponse) throws -> Void) async throws {
                let response = try await client.execute(uri: uri, method: .get, headers: bearer(BillingFixture.adminKey)) { $0 }
                try check(response)
            }
            try await get("/ui?period=2026-03") { response in
                let html = response.text
                #expect(response.status == .ok)
                #expect(!html.contains("<script"))
                #expect(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"))
                #expect(html.contains("/ui/tenants/%3Cscript%3Ealert%28%27x%27%29%3C%2Fscript%3E?period=2026-03"))
                #expect(html.contains("&lt;b&gt;edge&lt;/b&gt;") && !html.contains("<b>edge</b>"))
                #expect(html.contains("Tenants 1–50 of 126, page 1 of 3."))
                #expect(html.contains("<td class=\"n\" title=\"3,500,000 bytes\">3.50 MB</td>"))
                #expect(html.contains("<td class=\"n\">$20.76</td>"))
                #expect(html.contains("€"))  // euro-co's charges in its plan's currency
                #expect(html.contains("title=\"") && html.contains("not priced"))  // mixed, with its reason
                #expect(html.contains("href=\"/ui?period=2026-03&amp;page=2\" rel=\"next\""))
                #expect(html.contains("<th class=\"n\"><a href=\"/ui?period=2026-03&amp;sort=charges&amp;order=desc\">Charges</a></th>"))
                #expect(html.contains("<th aria-sort=\"ascending\"><a href=\"/ui?period=2026-03&amp;sort=tenant&amp;order=desc\">Tenant ▲</a></th>"))
                #expect(html.contains("id=\"reconciliation\"") && html.contains("<td class=\"ok\">yes</td>"))
            }
            // Page 3 holds the last 26 of 126 in byte order; a page past the end shows the last.
            try await get("/ui?period=2026-03&page=3") { response in
                #expect(response.text.contains("Tenants 101–126 of 126, page 3 of 3."))
                #expect(response.text.contains(">t-119</a>") && !response.text.contains(">t-073</a>"))
            }
            try await get("/ui?period=2026-03&page=40") { response in
                #expect(response.status == .ok && response.text.contains("page 3 of 3"))
            }
            // Sorted by charges, largest first: acme ($20.76) leads; the toggle link sorts upwards.
            try await get("/ui?period=2026-03&sort=charges") { response in
                let html = response.text
                let first = try #require(html.range(of: "<tbody>\n<tr><td><a href=\"/ui/tenants/"))
                #expect(html[first.upperBound...].hasPrefix("acme?"))
                #expect(html.contains("sort=charges&amp;order=asc\">Charges ▼</a>"))
            }
            // A search, reflected escaped; none found says so.
            try await get("/ui?period=2026-03&q=T-11") { response in
                #expect(response.text.contains("Tenants 1–10 of 10 whose name contains “T-11”"))
                #expect(response.text.contains("value=\"T-11\""))
            }
            try await get("/ui?period=2026-03&q=%22%3E%3Cx%3E") { response in
                #expect(response.text.contains("value=\"&quot;&gt;&lt;x&gt;\""))
                #expect(response.text.contains("No tenant name contains “&quot;&gt;&lt;x&gt;”."))
            }
            for bad in ["page=0", "page=two", "sort=price", "sort=metric:nope", "order=up", "period=2026-13", "period=2031-01"] {
                try await get("/ui?\(bad)") { response in
                    #expect(response.status == .badRequest || response.status == .notFound, "\(bad): \(response.status)")
                    #expect(response.headers[.contentType]?.hasPrefix("text/html") == true)
                }
            }
        }
        await fixture.shutdown()
    }

    @Test func theTenantPageHasChartsLinksAndFiguresForPeople() async throws {
        let fixture = try await fixture()
        try await fixture.application().test(.router) { client in
            try await client.execute(uri: "/ui/tenants/acme?period=2026-03&day=2026-03-03", method: .get, headers: bearer(BillingFixture.adminKey)) {
                response in
                let html = response.text
                #expect(response.status == .ok)
                #expect(html.contains("<a href=\"/ui?period=2026-03\">← All tenants</a>"))
                #expect(html.contains("Hourly usage — 2026-03-03"))
                #expect(html.contains("aria-label=\"api_calls per hour of 2026-03-03\""))
                #expect(html.contains("<title>2026-03-03 11:00: 100</title>"))
                #expect(html.contains("aria-label=\"api_calls per day of 2026-03\""))
                #expect(html.contains("href=\"/ui/tenants/acme?period=2026-03&amp;day=2026-03-02#hourly\""))  // a day's bar opens its hours
                #expect(html.contains("<b>3.50 MB</b>"))  // bytes_out's period total
                #expect(html.contains("period total 291"))
                #expect(html.contains("← 2026-03-02") && html.contains("2026-03-04 →"))
                #expect(html.contains("href=\"/ui/tenants/acme?period=2026-04\">2026-04 →"))
                #expect(html.contains("<a href=\"/ui/tenants/acme/invoices/2026-03?format=csv\">CSV</a>"))
                #expect(!html.contains("<script"))
            }
            // A tenant's own key reads its page, without the overview's link.
            try await client.execute(uri: "/ui/tenants/acme?period=2026-04", method: .get, headers: bearer(BillingFixture.acmeKey)) { response in
                #expect(response.status == .ok)
                #expect(!response.text.contains("All tenants"))
                #expect(response.text.contains("Hourly usage — 2026-04-02"))  // by default the latest day with usage
            }
            for bad in ["day=2026-04-01", "day=2026-3-3", "day=tomorrow"] {
                try await client.execute(uri: "/ui/tenants/acme?period=2026-03&\(bad)", method: .get, headers: bearer(BillingFixture.adminKey)) {
                    response in
                    #expect(response.status == .badRequest, "\(bad)")
                }
            }
        }
        await fixture.shutdown()
    }
}
