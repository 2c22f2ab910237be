import Foundation
import Hummingbird
import HummingbirdTesting
import Testing
import TallyCore
import TallyLedger
@testable import TallyCollector

@Suite struct TallyBillingAPITests {
    /// Query strings decode as browsers and clients send them: `+` is a space, `%C3%A9` is "é".
    /// (`?agent=edge+caf%C3%A9` once found nothing: it looked for an agent named "edge+café".)
    @Test func queryStringsDecodePlusAsASpace() async throws {
        let fixture = try BillingFixture()
        _ = try await fixture.commit([try BillingFixture.event("acme", 5, at: "2026-03-02T10:00:00Z", id: "e1")], agent: "edge café")
        _ = try await fixture.commit([try BillingFixture.event("acme", 5, at: "2026-03-02T10:00:00Z", id: "e2")], agent: "edge+café")
        try await fixture.application().test(.router) { client in
            for (query, agent) in [("edge+caf%C3%A9", "edge café"), ("edge%2Bcaf%C3%A9", "edge+café")] {
                try await client.execute(
                    uri: "/v1/reconciliation?period=2026-03&agent=\(query)", method: .get, headers: bearer(BillingFixture.adminKey)
                ) { response in
                    #expect(response.status == .ok)
                    let rows = try #require(try response.json()["rows"] as? [[String: Any]], "\(String(buffer: response.body))")
                    #expect(rows.map { $0["agent"] as? String } == [agent], "?agent=\(query)")
                }
            }
            try await client.execute(uri: "/v1/reconciliation?agent=%FF", method: .get, headers: bearer(BillingFixture.adminKey)) {
                response in
                #expect(response.status == .badRequest)
            }
        }
        await fixture.shutdown()
        let query = FormQuery("a=1+2&b=x%2By&c&a=3")
        #expect(query.get("a") == "1 2" && query.get("b") == "x+y" && query.get("c") == "")
    }

    /// A tenant in the path is percent-decoded when it has a `%` and taken as it is otherwise;
    /// an invalid escape is refused with the parameter named, not looked up.
    @Test func pathTenantsArePercentDecoded() async throws {
        let fixture = try BillingFixture()
        _ = try await fixture.commit([try BillingFixture.event("edge café", 5, at: "2026-03-02T10:00:00Z", id: "e1")])
        _ = try await fixture.commit([try BillingFixture.event("plain-tenant", 7, at: "2026-03-02T10:00:00Z", id: "e2")])
        try await fixture.application().test(.router) { client in
            for (path, tenant) in [("edge%20caf%C3%A9", "edge café"), ("plain-tenant", "plain-tenant")] {
                try await client.execute(uri: "/v1/tenants/\(path)/charges", method: .get, headers: bearer(BillingFixture.adminKey)) {
                    response in
                    #expect(response.status == .ok, "\(path)")
                    let body = try response.json()
                    let invoice = body["invoice"] as? [String: Any]
                    #expect(invoice?["tenant"] as? String == tenant, "\(String(buffer: response.body))")
                }
            }
            try await client.execute(uri: "/v1/tenants/%FF/charges", method: .get, headers: bearer(BillingFixture.adminKey)) { response in
                #expect(response.status == .badRequest)
                #expect(String(buffer: response.body).contains("tenant"))
            }
        }
        await fixture.shutdown()
    }

    /// Usage answers equal the committed events, per day and per endpoint group.
    @Test func usageIsExactAgainstCommittedBatches() async throws {
        let fixture = try BillingFixture()
        var events: [UsageEvent] = []
        for index in 0..<30 {
            let day = index % 3 + 1
            let endpoint = index % 2 == 0 ? "/search" : "/items"
            events.append(
                try BillingFixture.event(
                    "acme", Int64(index % 4 + 1),
                    at: "2026-03-0\(day)T1\(index % 10):00:00Z", id: "e\(index)", [("endpoint", endpoint)]))
        }
        try await fixture.commit(events)
        try await fixture.commit(events)  // a replay of the same events (new batch): all duplicates
        var perDay: [Int: Int64] = [:]
        var perEndpoint: [String: Int64] = [:]
        for (index, event) in events.enumerated() {
            perDay[index % 3 + 1, default: 0] += Int64(event.quantity.description) ?? 0
            perEndpoint[event.properties["endpoint"] ?? "", default: 0] += Int64(event.quantity.description) ?? 0
        }
        let perDayTotals = perDay
        let perEndpointTotals = perEndpoint
        try await fixture.application().test(.router) { client in
            try await client.execute(
                uri: "/v1/usage?tenant=acme&metric=api_calls&from=2026-03-01T00:00:00Z&to=2026-04-01T00:00:00Z&granularity=day",
                method: .get, headers: bearer(BillingFixture.adminKey)
            ) { response in
                #expect(response.status == .ok)
                let buckets = try #require(try response.json()["buckets"] as? [[String: Any]])
                #expect(buckets.count == 3)
                for (index, bucket) in buckets.enumerated() {
                    #expect(bucket["sum"] as? String == String(perDayTotals[index + 1] ?? -1))
                    #expect(bucket["start"] as? String == "2026-03-0\(index + 1)T00:00:00Z")
                }
            }
            try await client.execute(
                uri: "/v1/usage?tenant=acme&metric=api_calls&from=2026-03-01T00:00:00Z&to=2026-04-01T00:00:00Z&granularity=month&group_by=endpoint",
                method: .get, headers: bearer(BillingFixture.acmeKey)
            ) { response in
                let buckets = try #require(try response.json()["buckets"] as? [[String: Any]])
                let groups = Dictionary(
                    uniqueKeysWithValues: buckets.compactMap { bucket in
                        (bucket["group"] as? String).map { ($0, bucket["sum"] as? String ?? "") }
                    })
                #expect(groups == perEndpointTotals.mapValues { String($0) })
            }
            try await client.execute(
                uri: "/v1/usage?tenant=acme&metric=api_calls&granularity=week", method: .get,
                headers: bearer(BillingFixture.adminKey)
            ) { response in
                #expect(response.status == .badRequest)
                let error = try #require(try response.json()["error"] as? [String: Any])
                #expect(error["parameter"] as? String == "granularity")
            }
            try await client.execute(
                uri: "/v1/usage?tenant=acme&metric=api_calls&from=yesterday", method: .get,
                headers: bearer(BillingFixture.adminKey)
            ) { response in
                #expect(response.status == .badRequest)
                let problem = try response.json()["error"] as? [String: Any]
                #expect(problem?["parameter"] as? String == "from")
            }
            try await client.execute(uri: "/v1/tenants/acme/invoices/2031-01", method: .get, headers: bearer(BillingFixture.adminKey)) { response in
                #expect(response.status == .notFound)
            }
            try await client.execute(uri: "/v1/tenants/acme/invoices/March", method: .get, headers: bearer(BillingFixture.adminKey)) { response in
                #expect(response.status == .badRequest)
            }
            try await client.execute(uri: "/v1/reconciliation?period=2026-03", method: .get, headers: bearer(BillingFixture.adminKey)) { response in
                let total = try #require(try response.json()["total"] as? [String: Any])
                #expect(total["received"] as? Int == 60)
                #expect(total["accepted"] as? Int == 30)
                #expect(total["duplicate"] as? Int == 30)
                #expect(total["balances"] as? Bool == true)
            }
        }
        await fixture.shutdown()
    }

    /// The seed's example end to end through the ledger: 120,000 calls, 50,000 free, $0.001 → $70.00.
    @Test func seedExampleIsSeventyDollars() async throws {
        let fixture = try BillingFixture()
        for batch in 0..<12 {
            var events: [UsageEvent] = []
            for index in 0..<100 {
                events.append(
                    try BillingFixture.event("acme", metric: "api_calls", 100, at: "2026-03-\(10 + batch % 9)T10:00:00Z", id: "b\(batch)-\(index)"))
            }
            try await fixture.commit(events)
        }
        let view = try await fixture.service.charges(tenant: "acme")
        #expect(view.status == .draft)
        #expect(view.invoice.total == "70.00")
        let line = try #require(view.invoice.lines.first { $0.metric == "api_calls" })
        #expect(line.quantity == "120000")
        #expect(line.freeQuantity == "50000")
        #expect(line.amount == "70.00")
        // The same figure equals the pricing engine over the period totals.
        let engine = fixture.pricing.engine
        let period = BillingPeriod(containing: fixture.now)
        let direct = try engine.invoice(
            tenant: "acme", period: period,
            usage: [.init(metric: "api_calls"): Quantity(120_000), .init(metric: "exports"): .zero])
        #expect(direct.total.amountText == view.invoice.total)
        try await fixture.application().test(.router) { client in
            try await client.execute(uri: "/v1/tenants/acme/charges?format=csv", method: .get, headers: bearer(BillingFixture.acmeKey)) { response in
                #expect(response.headers[.contentType]?.hasPrefix("text/csv") == true)
                #expect(response.text.contains("acme,2026-03,draft,usage,api_calls,api_calls,,,120000,50000,,70.00,"))
                #expect(response.text.contains("acme,2026-03,draft,total,total,,,,,,,70.00,"))
            }
        }
        await fixture.shutdown()
    }

    /// A tenant key never returns another tenant's data: 403, not an empty answer.
    @Test func tenantKeysAreIsolated() async throws {
        let fixture = try BillingFixture()
        try await fixture.commit([
            try BillingFixture.event("acme", at: "2026-03-02T10:00:00Z", id: "a"),
            try BillingFixture.event("globex", 5, at: "2026-03-02T10:00:00Z", id: "g", [("endpoint", "/search")]),
        ])
        try await fixture.application().test(.router) { client in
            for uri in [
                "/v1/tenants/globex/charges", "/v1/tenants/globex/invoices/2026-03", "/v1/usage?tenant=globex&metric=api_calls",
                "/v1/reconciliation?tenant=globex", "/ui/tenants/globex",
            ] {
                try await client.execute(uri: uri, method: .get, headers: bearer(BillingFixture.acmeKey)) { response in
                    #expect(response.status == .forbidden, "\(uri)")
                    #expect(!response.text.contains("\"globex\",") && !response.text.contains("0.01"), "\(uri)")
                }
                try await client.execute(uri: uri, method: .get) { response in
                    #expect(response.status == .unauthorized, "\(uri) without a key")
                }
                try await client.execute(uri: uri, method: .get, headers: bearer("wrong")) { response in
                    #expect(response.status == .unauthorized, "\(uri) with an unknown key")
                }
            }
            try await client.execute(uri: "/v1/reconciliation", method: .get, headers: bearer(BillingFixture.acmeKey)) { response in
                let rows = try #require(try response.json()["rows"] as? [[String: Any]])
                #expect(rows.count == 1)
                #expect(rows.allSatisfy { $0["tenant"] as? String == "acme" })
            }
            try await client.execute(uri: "/v1/reports/2026-03.csv", method: .get, headers: bearer(BillingFixture.acmeKey)) { response in
                #expect(response.status == .ok)
                #expect(!response.text.contains("globex"))
            }
            try await client.execute(uri: "/v1/tenants/globex/charges", method: .get, headers: bearer(BillingFixture.adminKey)) { response in
                #expect(response.status == .ok)
                let invoice = try response.json()["invoice"] as? [String: Any]
                // 5 calls on /search at 0.002 each.
                #expect(invoice?["total"] as? String == "0.01")
            }
        }
        // Keyless reads: loopback only, and only when no admin key is configured.
        let open = APIAccess(adminKey: nil, tenantKeys: [:])
        #expect(try open.grant(authorization: nil, remote: try .init(ipAddress: "127.0.0.1", port: 1)) == .everything)
        #expect(throws: APIError.self) { try open.grant(authorization: nil, remote: try .init(ipAddress: "10.1.2.3", port: 1)) }
        let closed = APIAccess(adminKey: "admin-key-0123456789", tenantKeys: [:])
        #expect(throws: APIError.self) { try closed.grant(authorization: nil, remote: try .init(ipAddress: "127.0.0.1", port: 1)) }
        await fixture.shutdown()
    }

    /// Printable HTML escapes tenant-supplied strings; the usage page draws an SVG chart.
    @Test func htmlEscapesAndShowsFigures() async throws {
        let fixture = try BillingFixture()
        let tenant = "<script>alert('x')</script>"
        try await fixture.commit([
            try BillingFixture.event(tenant, 60_000, at: "2026-03-03T10:00:00Z", id: "1", [("endpoint", "<b>")]),
            try BillingFixture.event(tenant, 1_000, at: "2026-03-04T10:00:00Z", id: "2"),
        ])
        let encoded = "%3Cscript%3Ealert('x')%3C%2Fscript%3E"
        try await fixture.application().test(.router) { client in
            try await client.execute(uri: "/v1/tenants/\(encoded)/charges?format=html", method: .get, headers: bearer(BillingFixture.adminKey)) {
                response in
                #expect(response.status == .ok)
                #expect(!response.text.contains("<script"))
                #expect(response.text.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"))
                #expect(response.text.contains("11.00"))  // 61,000 - 50,000 free at $0.001
            }
            try await client.execute(uri: "/ui/tenants/\(encoded)", method: .get, headers: bearer(BillingFixture.adminKey)) { response in
                #expect(response.status == .ok)
                #expect(!response.text.contains("<script"))
                #expect(response.text.contains("<svg"))
                #expect(response.text.contains("2026-03-03: 60,000"))
                #expect(response.text.contains("period total 61,000"))
            }
        }
        #expect(InvoiceRendering.csv("=cmd,\"x\"") == "\"'=cmd,\"\"x\"\"\"")
        await fixture.shutdown()
    }
}
