import Foundation
import Hummingbird
import HummingbirdTesting
import Testing
import TallyCore
import TallyLedger
@testable import TallyCollector

/// `GET /v1/events/trace`: one event from its arrival to its invoice line — draft, final, or an
/// adjustment — or to the reason it is not billed; tenant keys see only their own events.
@Suite struct EventTraceTests {
    func trace(_ client: some TestClientProtocol, _ query: String, key: String = BillingFixture.adminKey) async throws -> EventTraceReport {
        try await client.execute(uri: "/v1/events/trace?\(query)", method: .get, headers: bearer(key)) { response in
            #expect(response.status == .ok, "\(response.text)")
            return try JSONDecoder().decode(EventTraceReport.self, from: Data(response.text.utf8))
        }
    }

    func invoiceLines(_ client: some TestClientProtocol, _ path: String) async throws -> (status: String, sha256: String?, lines: [[String: Any]]) {
        try await client.execute(uri: path, method: .get, headers: bearer(BillingFixture.adminKey)) { response in
            let view = try response.json()
            let invoice = try #require(view["invoice"] as? [String: Any])
            return (view["status"] as? String ?? "", view["sha256"] as? String, invoice["lines"] as? [[String: Any]] ?? [])
        }
    }

    @Test func anEventToItsDraftInvoiceLine() async throws {
        let fixture = try BillingFixture()
        let disputed = try BillingFixture.event("acme", 60_000, at: "2026-03-02T10:15:00Z", id: "req-7f3a", [("endpoint", "/search")])
        let sameDay = try BillingFixture.event("acme", 1_000, at: "2026-03-02T14:00:00Z", id: "req-2", [("endpoint", "/items")])
        try await fixture.commit([disputed, sameDay])
        try await fixture.commit([disputed], agent: "edge-2")  // a client retry through another agent
        let filtered = try BillingFixture.event("acme", metric: "exports", 1, at: "2026-03-03T09:00:00Z", id: "exp-1", [("status", "500")])
        try await fixture.commit([filtered])
        try await fixture.application().test(.router) { client in
            let report = try await trace(client, "tenant=acme&id=req-7f3a", key: BillingFixture.acmeKey)
            #expect(report.found && report.refusals.isEmpty)
            #expect(report.searched.from == "2026-02-01T00:00:00Z" && report.searched.to == "2026-04-01T00:00:00Z")
            let event = try #require(report.events.first)
            #expect(report.events.count == 1)
            #expect(event.fingerprint == Fingerprint(of: disputed).description)
            #expect(event.canonical == Hex.encode(CanonicalEncoding.bytes(of: disputed)) && event.canonicalForm == "id")
            #expect(event.outcome == "accepted" && event.period == "2026-03" && event.billedIn == "2026-03")
            #expect(event.firstArrival.agent == "edge-1" && event.firstArrival.batch == 1 && event.firstArrival.index == 0)
            #expect(event.received == 2 && event.duplicates.map(\.agent) == ["edge-2"] && event.duplicates.first?.batch == 2)
            #expect(event.explanation.contains("received 2 times"))
            // The cells it is counted in, with their values: its hour alone; the day and month
            // hold the other event too; one cell per endpoint besides the totals.
            func cell(_ grain: String, _ dimension: String?) -> EventTraceReport.Cell? {
                event.cells.first { $0.grain == grain && $0.dimension == dimension }
            }
            #expect(cell("hour", nil)?.sum == "60000" && cell("hour", nil)?.bucket == "2026-03-02T10:00:00Z")
            #expect(cell("day", nil)?.sum == "61000" && cell("day", nil)?.count == 2)
            #expect(cell("month", nil)?.sum == "61000" && cell("month", nil)?.bucket == "2026-03-01T00:00:00Z")
            #expect(cell("month", "endpoint")?.value == "/search" && cell("month", "endpoint")?.sum == "60000")
            #expect(event.cells.count == 6)
            // Its invoice line: 61,000 calls, the first 50,000 free, then $0.001 → $11.00, as the
            // charges endpoint itself says.
            let line = try #require(event.invoiceLines.first)
            #expect(event.invoiceLines.count == 1)
            #expect(line.status == "draft" && line.period == "2026-03" && line.plan == "starter" && line.adjusts == nil)
            #expect(line.quantity == "61000" && line.amount == "11.00" && line.currency == "USD")
            let charges = try await invoiceLines(client, "/v1/tenants/acme/charges")
            #expect(charges.lines.contains { $0["metric"] as? String == "api_calls" && $0["amount"] as? String == line.amount })
            #expect(event.billing.contains("draft 2026-03 invoice"))

            // The same event by fingerprint, upper-case hex.
            let byPrint = try await trace(client, "tenant=acme&fingerprint=\(Fingerprint(of: disputed).description.uppercased())")
            #expect(byPrint.events.map(\.fingerprint) == [event.fingerprint])

            // An event the metric's filter leaves out is stored and counted, but billed nowhere.
            let export = try #require(try await trace(client, "tenant=acme&id=exp-1").events.first)
            #expect(export.invoiceLines.isEmpty && export.billing.contains("filters it out"))

            // The page for people: the same answer, with links to the invoice; the form alone
            // without an id; a tenant key for another tenant is refused.
            let page = try await client.execute(
                uri: "/ui/tenants/acme/trace?id=req-7f3a", method: .get, headers: bearer(BillingFixture.acmeKey)
            ) { response in
                #expect(response.status == .ok && response.headers[.contentType]?.hasPrefix("text/html") == true)
                return response.text
            }
            #expect(page.contains("accepted: billed once") && page.contains(event.fingerprint))
            #expect(page.contains("href=\"/ui/tenants/acme/invoices/2026-03?format=html\"") && page.contains("11.00 USD"))
            #expect(page.contains("Duplicate</th><td>edge-2"))
            let form = try await client.execute(uri: "/ui/tenants/acme/trace", method: .get, headers: bearer(BillingFixture.acmeKey)) {
                $0.text
            }
            #expect(form.contains("<form class=\"search\"") && !form.contains("Received</th>"))
            let missing = try await client.execute(uri: "/ui/tenants/acme/trace?id=nope", method: .get, headers: bearer(BillingFixture.adminKey)) {
                $0.text
            }
            #expect(missing.contains("never received"))
            try await client.execute(uri: "/ui/tenants/acme/trace?id=req-7f3a", method: .get, headers: bearer(BillingFixture.globexKey)) {
                #expect($0.status == .forbidden)
            }

            // Never received: found is false and the summary says what was searched.
            let never = try await trace(client, "tenant=acme&id=req-0000")
            #expect(!never.found && never.events.isEmpty && never.summary.contains("never received"))
            #expect(never.summary.contains("2026-02-01T00:00:00Z"))

            // Another tenant's key cannot trace acme's events; bad parameters are 400s.
            try await client.execute(uri: "/v1/events/trace?tenant=acme&id=req-7f3a", method: .get, headers: bearer(BillingFixture.globexKey)) {
                response in
                #expect(response.status == .forbidden || response.status == .notFound, "\(response.text)")
                #expect(!response.text.contains("req-7f3a\",\"metric"))
            }
            for (query, parameter) in [
                ("tenant=acme", "id"), ("id=req-7f3a", "tenant"), ("tenant=acme&id=a&fingerprint=00", "fingerprint"),
                ("tenant=acme&fingerprint=xyz", "fingerprint"), ("tenant=acme&id=a&period=March", "period"),
                ("tenant=acme&id=a&from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z", "from"),
            ] {
                try await client.execute(uri: "/v1/events/trace?\(query)", method: .get, headers: bearer(BillingFixture.adminKey)) { response in
                    #expect(response.status == .badRequest, "\(query): \(response.text)")
                    #expect(response.text.contains("\"parameter\":\"\(parameter)\""), "\(query): \(response.text)")
                }
            }
        }
        await fixture.shutdown()
    }

    /// After March closes: an on-time March event is on the final March invoice (with its
    /// SHA-256), a late one on April's draft as an adjustment line for March.
    @Test func finalInvoiceAndAdjustmentLines() async throws {
        let fixture = try BillingFixture()
        try await fixture.commit([try BillingFixture.event("acme", 52_000, at: "2026-03-10T08:00:00Z", id: "on-time")])
        try fixture.setNow("2026-04-10T12:00:00Z")  // March closed on April 4 (72 h of grace)
        try await fixture.commit([try BillingFixture.event("acme", 3_000, at: "2026-03-25T08:00:00Z", id: "late-1")])
        try await fixture.application().test(.router) { client in
            let onTime = try #require(try await trace(client, "tenant=acme&id=on-time&period=2026-03").events.first)
            let finalLine = try #require(onTime.invoiceLines.first)
            let march = try await invoiceLines(client, "/v1/tenants/acme/invoices/2026-03")
            #expect(march.status == "final" && finalLine.status == "final" && finalLine.sha256 == march.sha256 && march.sha256 != nil)
            // 52,000 calls in March when it closed: 2,000 above the free 50,000 → $2.00.
            #expect(finalLine.quantity == "52000" && finalLine.amount == "2.00")

            let late = try #require(try await trace(client, "tenant=acme&id=late-1&period=2026-03").events.first)
            #expect(late.outcome == "adjusted" && late.period == "2026-03" && late.billedIn == "2026-04")
            #expect(late.explanation.contains("adjustment on the 2026-04 invoice"))
            #expect(late.cells.allSatisfy { $0.billedIn == "2026-04" } && !late.cells.isEmpty)
            let aprilLines = try await invoiceLines(client, "/v1/tenants/acme/charges").lines
            let adjustment = try #require(late.invoiceLines.first, "\(late.billing) \(aprilLines)")
            #expect(adjustment.status == "draft" && adjustment.period == "2026-04" && adjustment.adjusts == "2026-03")
            // 3,000 more calls, all above the free allowance: +$3.00, as April's draft bills it.
            #expect(adjustment.quantity == "3000" && adjustment.amount == "3.00")
            let april = try await invoiceLines(client, "/v1/tenants/acme/charges")
            #expect(april.lines.contains { $0["adjusts"] as? String == "2026-03" && $0["amount"] as? String == "3.00" })
        }
        await fixture.shutdown()
    }
}
