import ArgumentParser
import Crypto
import Foundation
import Hummingbird
import HummingbirdTesting
import TallyCLI
import TallyCore
import TallyLedger
import Testing

@testable import TallyCollector

/// A final invoice's SHA-256 is taken over Tally's canonical JSON, encoded once, and is the hash
/// of exactly the bytes served for it.
@Suite struct InvoiceHashTests {
    static func sha256(_ bytes: some Sequence<UInt8>) -> String {
        SHA256.hash(data: Array(bytes)).map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }
            .joined()
    }

    static func closedMarch() async throws -> (BillingFixture, BillingPeriod) {
        let fixture = try BillingFixture(now: "2026-03-20T12:00:00Z")
        try await fixture.commit([
            try BillingFixture.event("acme", 80_000, at: "2026-03-05T10:00:00Z", id: "m1", [("endpoint", "/search")]),
            try BillingFixture.event("acme", metric: "exports", 1, at: "2026-03-06T10:00:00Z", id: "x1", [("status", "200")]),
        ])
        try fixture.setNow("2026-04-05T00:00:00Z")
        return (fixture, try #require(BillingPeriod("2026-03")))
    }

    static func storedInvoice(_ fixture: BillingFixture, _ period: BillingPeriod) async throws -> FinalInvoiceRecord {
        let stored = try await fixture.writer.perform { store throws(LedgerError) in try store.finalInvoice(tenant: "acme", period: period) }
        return try #require(stored)
    }

    @Test func theStoredHashIsTheSHA256OfExactlyTheBytesServed() async throws {
        let (fixture, march) = try await Self.closedMarch()
        let unfrozen = try await fixture.service.invoice(tenant: "acme", period: march)
        #expect(try await fixture.service.freezeClosedPeriods() >= 1)
        let stored = try await Self.storedInvoice(fixture, march)
        #expect(stored.sha256 == Self.sha256(stored.json.utf8))
        #expect(unfrozen.sha256 == stored.sha256)  // a read before freezing promised the same hash
        #expect(stored.json == (try unfrozen.invoice.canonicalJSON()))

        try await fixture.application().test(.router) { client in
            let uri = "/v1/tenants/acme/invoices/2026-03"
            try await client.execute(uri: uri + "?format=document", method: .get, headers: bearer(BillingFixture.adminKey)) { response in
                #expect(response.status == .ok)
                let served = Array(response.body.readableBytesView)
                #expect(Self.sha256(served) == stored.sha256)
                #expect(served == Array(stored.json.utf8))
                #expect(response.headers[.init(CollectorHTTP.invoiceSHA256Header)!] == stored.sha256)
            }
            try await client.execute(uri: uri, method: .get, headers: bearer(BillingFixture.adminKey)) { response in
                #expect(response.status == .ok)
                // The view embeds the invoice's bytes unchanged, between keys in their fixed order.
                #expect(response.text.hasPrefix("{\"closesAt\":\"2026-04-04T00:00:00Z\",\"finalizedAt\":\""))
                #expect(response.text.contains(",\"invoice\":" + stored.json + ",\"sha256\":\"" + stored.sha256 + "\",\"status\":\"final\"}"))
                #expect(response.headers[.init(CollectorHTTP.invoiceSHA256Header)!] == stored.sha256)
            }
            try await client.execute(uri: uri + "?format=csv", method: .get, headers: bearer(BillingFixture.adminKey)) { response in
                #expect(response.headers[.init(CollectorHTTP.invoiceSHA256Header)!] == stored.sha256)
            }
            // A draft has no hash to promise.
            try await client.execute(uri: "/v1/tenants/acme/charges?format=document", method: .get, headers: bearer(BillingFixture.adminKey)) {
                response in
                #expect(response.status == .ok)
                #expect(response.headers[.init(CollectorHTTP.invoiceSHA256Header)!] == nil)
                #expect(response.text.hasPrefix("{\"adjustments\":"))
            }
        }
        await fixture.shutdown()
    }

    @Test func anInvoiceIsEncodedDeterministicallyWithKeysInAFixedOrder() async throws {
        let (fixture, march) = try await Self.closedMarch()
        let view = try await fixture.service.invoice(tenant: "acme", period: march)
        let again = try await fixture.service.invoice(tenant: "acme", period: march)
        let json = try view.invoice.canonicalJSON()
        #expect(view.invoiceJSON.text == json)
        #expect(again.invoiceJSON.text == json)  // priced and encoded again: the same bytes
        #expect(try view.invoice.canonicalJSON() == json)

        guard case .object(let members) = try JSONParser.parse(json), case .array(let lines)? = members.first(where: { $0.key == "lines" })?.value,
            case .object(let line)? = lines.first
        else {
            Issue.record("the invoice JSON is not an object with lines: \(json)")
            return
        }
        // Sorted keys, not the declaration order (which starts tenant, period, ...).
        #expect(
            members.map { $0.key } == [
                "adjustments", "currency", "lines", "period", "periodEnd", "periodStart", "segments", "subtotal", "tenant", "total",
            ])
        #expect(line.map { $0.key } == line.map { $0.key }.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) })
        #expect(line.map { $0.key }.contains("exactAmount") && line.map { $0.key }.first == "amount")
        // Canonical: writing the parsed text again gives it back byte for byte.
        #expect(JSONWriter.write(try JSONParser.parse(json)) == json)
        #expect(Self.sha256(json.utf8) == view.sha256)
        await fixture.shutdown()
    }

    /// Final invoices frozen before Tally's writer (Foundation's encoder spelled them) are served
    /// as stored, under their stored hash; the audit sees the same invoice, not drift, and still
    /// finds a stored invoice that was changed.
    @Test func aFinalInvoiceFrozenInAnOlderSpellingIsServedAsStored() async throws {
        let (fixture, march) = try await Self.closedMarch()
        let priced = try await fixture.service.invoice(tenant: "acme", period: march)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        let older = String(decoding: try encoder.encode(priced.invoice), as: UTF8.self)
        #expect(older != (try priced.invoice.canonicalJSON()))
        let olderHash = Self.sha256(older.utf8)
        let record = FinalInvoiceRecord(tenant: "acme", period: march, json: older, sha256: olderHash, finalizedAt: fixture.now)
        _ = try await fixture.writer.perform { store throws(LedgerError) in try store.freezeInvoice(record) }
        _ = try await fixture.service.freezeClosedPeriods()  // never replaces a frozen invoice

        let view = try await fixture.service.invoice(tenant: "acme", period: march)
        #expect(view.sha256 == olderHash)
        #expect(view.invoiceJSON.text == older)
        #expect(view.invoice == priced.invoice)
        try await fixture.application().test(.router) { client in
            try await client.execute(
                uri: "/v1/tenants/acme/invoices/2026-03?format=document", method: .get, headers: bearer(BillingFixture.adminKey)
            ) { response in
                #expect(Array(response.body.readableBytesView) == Array(older.utf8))
                #expect(Self.sha256(response.body.readableBytesView) == olderHash)
            }
            try await client.execute(uri: "/v1/tenants/acme/invoices/2026-03", method: .get, headers: bearer(BillingFixture.adminKey)) {
                response in
                #expect(response.text.contains("\"invoice\":" + older + ",\"sha256\":\"" + olderHash + "\""))
            }
        }
        await fixture.shutdown()

        let pricingFile = URL(fileURLWithPath: fixture.path).deletingLastPathComponent().appendingPathComponent("pricing.yaml").path
        try BillingFixture.pricingYAML.write(toFile: pricingFile, atomically: true, encoding: .utf8)
        let audit = ["--store", "sqlite:\(fixture.path)", "--pricing", pricingFile, "--tenant", "acme", "--period", "2026-03"]
        try await AuditCommand.parse(audit).run()

        // The stored invoice changed behind the collector's back: drift.
        let sql = "UPDATE final_invoices SET json = replace(json, '\"total\" : \"', '\"total\" : \"1') WHERE tenant = 'acme';"
        #expect(try fixture.tamper(sql) == 0)
        await #expect(throws: ExitCode(1)) { try await AuditCommand.parse(audit).run() }
    }
}
