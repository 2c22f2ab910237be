import Foundation
import Hummingbird
import HummingbirdTesting
import Testing
import TallyCore
import TallyLedger
@testable import TallyCollector

/// `POST /v1/corrections`: an admin voids or amends events with a reason; the draft invoice
/// changes while the period is open, a closed period's difference is an adjustment line on the
/// next open invoice, invoices list the corrections with their reasons, the trace shows them,
/// and the audit still finds no drift.
@Suite struct CorrectionAPITests {
    func post(
        _ client: some TestClientProtocol, _ body: String, key: String = BillingFixture.adminKey
    ) async throws -> (status: HTTPResponse.Status, text: String) {
        try await client.execute(uri: "/v1/corrections", method: .post, headers: bearer(key), body: ByteBuffer(string: body)) { response in
            (response.status, response.text)
        }
    }

    func answer(_ text: String) throws -> CorrectionAnswer { try JSONDecoder().decode(CorrectionAnswer.self, from: Data(text.utf8)) }

    func charges(_ client: some TestClientProtocol, _ path: String = "/v1/tenants/acme/charges") async throws -> InvoiceView.Decoded {
        try await client.execute(uri: path, method: .get, headers: bearer(BillingFixture.adminKey)) { response in
            #expect(response.status == .ok, "\(response.text)")
            return try JSONDecoder().decode(InvoiceView.Decoded.self, from: Data(response.text.utf8))
        }
    }

    func noDrift(_ fixture: BillingFixture, _ period: String) async throws {
        let drift = try await fixture.service.onLedger(readOnly: true) { store throws(BillingError) in
            do throws(LedgerError) {
                return try store.recomputeAggregates(tenant: nil, period: BillingPeriod(period) ?? BillingPeriod(containing: .now()))
            } catch {
                throw .ledger(error)
            }
        }
        #expect(drift.differences.isEmpty && drift.cellsCompared > 0, "\(drift)")
    }

    @Test func voidAndAmendChangeTheDraftInvoice() async throws {
        let fixture = try BillingFixture()
        try await fixture.commit([
            try BillingFixture.event("acme", 60_000, at: "2026-03-02T10:00:00Z", id: "big", [("endpoint", "/search")]),
            try BillingFixture.event("acme", 1_000, at: "2026-03-02T11:00:00Z", id: "small", [("endpoint", "/items")]),
        ])
        try await fixture.application().test(.router) { client in
            #expect(try await charges(client).invoice.lines.first { $0.metric == "api_calls" }?.amount == "11.00")
            let void = #"{"key":"dispute-1","reason":"load test traffic, not the customer's","action":"void","tenant":"acme","id":"big"}"#
            let first = try await post(client, void)
            #expect(first.status == .ok, "\(first.text)")
            let applied = try answer(first.text)
            #expect(applied.applied == 1 && applied.matched == 1 && !applied.dryRun)
            #expect(applied.deltas == [.init(metric: "api_calls", quantity: "-60000")])
            let record = try #require(applied.corrections.first)
            #expect(record.action == "void" && record.billedIn == nil && record.quantityBefore == "60000" && !record.alreadyApplied)
            #expect(record.actor == "admin:" + SHA256Digest.hex(BillingFixture.adminKey).prefix(8) && record.reason.hasPrefix("load test"))
            // 1,000 calls left, inside the free 50,000.
            let draft = try await charges(client)
            let line = try #require(draft.invoice.lines.first { $0.metric == "api_calls" })
            #expect(line.quantity == "1000" && line.amount == "0.00")
            let note = try #require(draft.invoice.corrections?.first)
            #expect(note.key == "dispute-1" && note.quantityDelta == "-60000" && note.adjusts == nil && note.reason.hasPrefix("load test"))
            #expect(note.trace.hasPrefix("/v1/events/trace?tenant=acme&fingerprint="))

            // The same order again is the stored correction; nothing changes.
            let replay = try answer(try await post(client, void).text)
            #expect(
                replay.applied == 0 && replay.corrections.first?.alreadyApplied == true && replay.corrections.first?.createdAt == record.createdAt)
            #expect(try await charges(client).invoice.lines.first { $0.metric == "api_calls" }?.quantity == "1000")

            // Amend the other event to 52,000: 2,000 above the free allowance → $2.00.
            let amend = #"{"key":"dispute-2","reason":"the gateway logged 52k","action":"amend","quantity":"52000","tenant":"acme","id":"small"}"#
            #expect(try await post(client, amend).status == .ok)
            #expect(try await charges(client).invoice.lines.first { $0.metric == "api_calls" }?.amount == "2.00")

            // The trace says what happened to each.
            let trace = try await client.execute(uri: "/v1/events/trace?tenant=acme&id=big", method: .get, headers: bearer(BillingFixture.adminKey)) {
                try JSONDecoder().decode(EventTraceReport.self, from: Data($0.text.utf8))
            }
            let traced = try #require(trace.events.first)
            #expect(traced.explanation.contains("voided by correction 'dispute-1'") && traced.invoiceLines.isEmpty)
            #expect(traced.corrections.map(\.key) == ["dispute-1"] && traced.billing.contains("not billed"))

            // HTML and CSV carry the corrections with their reasons.
            let html = try await client.execute(uri: "/v1/tenants/acme/charges?format=html", method: .get, headers: bearer(BillingFixture.adminKey)) {
                $0.text
            }
            #expect(html.contains("<h2>Corrections</h2>") && html.contains("load test traffic, not the customer&#39;s"))
            let csv = try await client.execute(uri: "/v1/tenants/acme/charges?format=csv", method: .get, headers: bearer(BillingFixture.adminKey)) {
                $0.text
            }
            #expect(csv.split(separator: "\r\n").filter { $0.contains(",correction,") }.count == 2, "\(csv)")

            // Refused: a tenant key, bad orders, a second void, a reused key.
            #expect(try await post(client, void, key: BillingFixture.acmeKey).status == .forbidden)
            for (body, parameter) in [
                (#"{"key":"k","action":"void","tenant":"acme","id":"small"}"#, "reason"),
                (#"{"key":"k","reason":"r","action":"delete","tenant":"acme","id":"small"}"#, "action"),
                (#"{"key":"k","reason":"r","action":"amend","quantity":-1,"tenant":"acme","id":"small"}"#, "quantity"),
                (#"{"key":"k","reason":"r","action":"amend","tenant":"acme","id":"small"}"#, "action"),
                (#"{"key":"k","reason":"r","action":"void","tenant":"acme","id":"small","color":"red"}"#, "color"),
                (#"{"key":"k","reason":"r","action":"void","tenant":"acme","id":"nope"}"#, "event"),
                (#"{"key":"k2","reason":"again","action":"void","tenant":"acme","id":"big"}"#, "correction"),
                (#"{"key":"dispute-1","reason":"other","action":"void","tenant":"acme","id":"small"}"#, "correction"),
                (#"{"key": "#, "body"),
            ] {
                let refused = try await post(client, body)
                #expect(refused.status == .badRequest && refused.text.contains("\"parameter\":\"\(parameter)\""), "\(body): \(refused.text)")
            }
            #expect(try await charges(client).invoice.lines.first { $0.metric == "api_calls" }?.amount == "2.00")
        }
        try await noDrift(fixture, "2026-03")
        await fixture.shutdown()
    }

    /// After March closes, voiding a March event credits April: an adjustment line priced as
    /// March with and without the event; March's final invoice does not change.
    @Test func aClosedPeriodIsCreditedOnTheNextOpenInvoice() async throws {
        let fixture = try BillingFixture()
        try await fixture.commit([try BillingFixture.event("acme", 52_000, at: "2026-03-10T08:00:00Z", id: "mar")])
        try fixture.setNow("2026-04-10T12:00:00Z")
        try await fixture.application().test(.router) { client in
            let march = try await charges(client, "/v1/tenants/acme/invoices/2026-03")
            #expect(march.status == "final" && march.invoice.lines.first { $0.metric == "api_calls" }?.amount == "2.00")
            let body = #"{"key":"credit-7","reason":"outage credit","action":"void","tenant":"acme","id":"mar","period":"2026-03"}"#
            let applied = try answer(try await post(client, body).text)
            #expect(applied.corrections.first?.billedIn == "2026-04" && applied.corrections.first?.period == "2026-03")
            let april = try await charges(client)
            let adjustment = try #require(april.invoice.lines.first { $0.adjusts == "2026-03" && $0.metric == "api_calls" })
            #expect(adjustment.amount == "-2.00" && adjustment.quantity == "-52000")
            #expect(april.invoice.corrections?.first?.adjusts == "2026-03" && april.invoice.corrections?.first?.reason == "outage credit")
            let after = try await charges(client, "/v1/tenants/acme/invoices/2026-03")
            #expect(after.sha256 == march.sha256 && after.invoice == march.invoice)
        }
        try await noDrift(fixture, "2026-03")
        await fixture.shutdown()
    }

    /// A filter selects events by property; a dry run shows the change and writes nothing.
    @Test func bulkCorrectionWithADryRun() async throws {
        let fixture = try BillingFixture()
        var events: [UsageEvent] = []
        for index in 0..<8 {
            events.append(
                try BillingFixture.event(
                    "globex", 10, at: "2026-03-0\(index % 3 + 2)T10:00:00Z", id: "g\(index)", [("endpoint", index < 5 ? "/search" : "/items")]))
        }
        try await fixture.commit(events)
        try await fixture.application().test(.router) { client in
            let before = try await charges(client, "/v1/tenants/globex/charges")
            let order = """
                {"key":"bulk-1","reason":"bot traffic on /search","action":"void","tenant":"globex",
                 "filter":{"from":"2026-03-01T00:00:00Z","to":"2026-04-01T00:00:00Z","properties":{"endpoint":"/search"}},"dryRun":true}
                """
            let dry = try answer(try await post(client, order).text)
            #expect(dry.dryRun && dry.matched == 5 && dry.applied == 0 && dry.deltas == [.init(metric: "api_calls", quantity: "-50")])
            #expect(Set(dry.corrections.map(\.key)).count == 5 && dry.corrections.allSatisfy { $0.key.hasPrefix("bulk-1/") })
            #expect(try await charges(client, "/v1/tenants/globex/charges").invoice == before.invoice, "a dry run wrote")
            let real = try answer(try await post(client, order.replacingOccurrences(of: "\"dryRun\":true", with: "\"dryRun\":false")).text)
            #expect(real.applied == 5 && real.corrections.map(\.key) == dry.corrections.map(\.key))
            let after = try await charges(client, "/v1/tenants/globex/charges")
            #expect(after.invoice.lines.first { $0.propertyValue == "/search" }?.quantity == "0")
            #expect(after.invoice.lines.first { $0.propertyValue == "/items" }?.quantity == "30")
            #expect(after.invoice.corrections?.count == 5)
        }
        try await noDrift(fixture, "2026-03")
        await fixture.shutdown()
    }
}

extension InvoiceView {
    /// An invoice view as a client reads it back.
    struct Decoded: Decodable {
        var status: String
        var sha256: String?
        var invoice: InvoiceDocument
    }
}
