import Foundation
import Hummingbird
import HummingbirdTesting
import Testing
import TallyCore
import TallyLedger
@testable import TallyCollector

/// Reading an invoice used to write one: a GET for a closed period and a tenant nobody had
/// heard of froze a final invoice (the default plan's fees) in `final_invoices`.
@Suite struct InvoiceReadTests {
    static func finalInvoiceCount(_ fixture: BillingFixture) async throws -> Int {
        try await fixture.writer.perform { store throws(LedgerError) -> Int in
            let invoices = store
            var count = 0
            for tenant in ["acme", "globex", "stranger", "march-only"] {
                for period in ["2026-02", "2026-03"] {
                    guard let period = BillingPeriod(period) else { continue }
                    if try invoices.finalInvoice(tenant: tenant, period: period) != nil { count += 1 }
                }
            }
            return count
        }
    }

    @Test func anUnknownTenantGets404AndNothingIsWritten() async throws {
        let fixture = try BillingFixture(now: "2026-03-20T12:00:00Z")
        try await fixture.commit([
            try BillingFixture.event("acme", 80_000, at: "2026-03-05T10:00:00Z", id: "m1"),
            try BillingFixture.event("march-only", 10, at: "2026-03-01T00:00:00Z", id: "f1"),
        ])
        try fixture.setNow("2026-04-10T00:00:00Z")  // March has closed
        let march = try #require(BillingPeriod("2026-03"))

        try await fixture.application().test(.router) { client in
            for uri in [
                "/v1/tenants/stranger/invoices/2026-03", "/v1/tenants/stranger/invoices/2026-03?format=csv",
                "/v1/tenants/stranger/invoices/2026-04", "/v1/tenants/stranger/charges", "/ui/tenants/stranger?period=2026-03",
            ] {
                try await client.execute(uri: uri, method: .get, headers: bearer(BillingFixture.adminKey)) { response in
                    #expect(response.status == .notFound, "\(uri): \(response.text)")
                    #expect(response.text.contains("unknown tenant"), "\(uri)")
                }
            }
        }
        await #expect(throws: BillingError.unknownTenant("stranger")) {
            try await fixture.service.invoice(tenant: "stranger", period: march)
        }
        #expect(try await Self.finalInvoiceCount(fixture) == 0)

        // Known tenants have final invoices, but reading them writes nothing either: one with
        // events, and one that a plan assignment names (globex, no events: the plan's fees are
        // owed). The freezer stores them (and march-only's), because March closed.
        #expect(try await fixture.service.invoice(tenant: "acme", period: march).status == .final)
        #expect(try await fixture.service.invoice(tenant: "globex", period: march).status == .final)
        #expect(try await Self.finalInvoiceCount(fixture) == 0)
        #expect(try await fixture.service.freezeClosedPeriods() >= 3)
        #expect(try await Self.finalInvoiceCount(fixture) == 4)  // acme, march-only: March; globex: February, March
        #expect(try await fixture.service.invoice(tenant: "acme", period: march).finalizedAt != nil)
        // A tenant the ledger saw in another period (March) is known in this one (April) too.
        #expect(try await fixture.service.invoice(tenant: "march-only", period: march.next).status == .draft)
        await fixture.shutdown()
    }
}
