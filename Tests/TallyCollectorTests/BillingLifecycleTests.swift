import ArgumentParser
import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdTesting
import Synchronization
import Testing
import TallyCLI
import TallyCore
import TallyLedger
@testable import TallyCollector

@Suite struct TallyBillingLifecycleTests {
    /// The freezer prices on the ledger's reader: it never folds the aggregate log (a writer
    /// pricing a year of closed periods would fold before every read, holding its commits), and
    /// what it freezes counts the batches still in the log.
    @Test func theFreezerPricesOnTheReaderWithoutFolding() async throws {
        let fixture = try BillingFixture(now: "2026-03-20T12:00:00Z")
        try await fixture.commit([try BillingFixture.event("acme", 80_000, at: "2026-03-05T10:00:00Z", id: "m1")])
        try fixture.setNow("2026-03-31T12:00:00Z")
        // Still March's, in the log when the freezer runs.
        try await fixture.commit([try BillingFixture.event("acme", 20_000, at: "2026-03-31T10:00:00Z", id: "m2")])
        try fixture.setNow("2026-04-05T00:00:00Z")
        try await fixture.commit([try BillingFixture.event("acme", 1, at: "2026-04-04T10:00:00Z", id: "a1")])
        let unfolded = { () async throws -> Bool in
            try await fixture.writer.perform { store throws(LedgerError) in try store.hasUnfoldedAggregates() }
        }
        #expect(try await unfolded())
        #expect(try await fixture.service.freezeClosedPeriods() == 4)  // acme's March; globex (assigned) January to March
        #expect(try await unfolded(), "the freezer folded the aggregate log")
        let march = try await fixture.service.invoice(tenant: "acme", period: try #require(BillingPeriod("2026-03")))
        #expect(march.status == .final && march.finalizedAt != nil)
        // 100,000 calls, not the 80,000 of the folded batch alone ("30.00").
        #expect(march.invoice.total != "30.00")
        await fixture.shutdown()
    }

    /// More closed invoices than one freezing chunk: every one is frozen once, across chunks.
    @Test func theFreezerFreezesEveryTenantAcrossChunks() async throws {
        let fixture = try BillingFixture(now: "2026-03-20T12:00:00Z")
        let tenants = (0..<(2 * Invoicing.freezeChunk + 30)).map { "tenant-\($0)" }
        for chunk in stride(from: 0, to: tenants.count, by: 50) {
            let events = try tenants[chunk..<min(chunk + 50, tenants.count)].map {
                try BillingFixture.event($0, 10, at: "2026-03-05T10:00:00Z", id: "e-\($0)")
            }
            try await fixture.commit(events)
        }
        try fixture.setNow("2026-04-05T00:00:00Z")
        // Every tenant's March, and globex (assigned) January to March.
        #expect(try await fixture.service.freezeClosedPeriods() == tenants.count + 3)
        #expect(try await fixture.service.freezeClosedPeriods() == 0)
        let march = try #require(BillingPeriod("2026-03"))
        let stored = try await fixture.writer.perform { store throws(LedgerError) -> Int in
            var count = 0
            for tenant in tenants + ["globex"] where try store.finalInvoice(tenant: tenant, period: march) != nil { count += 1 }
            return count
        }
        #expect(stored == tenants.count + 1)
        await fixture.shutdown()
    }

    /// A closed period's invoice is frozen: late events change neither its content nor its hash,
    /// and appear as adjustment lines on the next period's invoice.
    @Test func finalInvoiceIsFrozenAndLateUsageIsAdjustedNextPeriod() async throws {
        let fixture = try BillingFixture(now: "2026-03-20T12:00:00Z")
        try await fixture.commit([try BillingFixture.event("acme", 80_000, at: "2026-03-05T10:00:00Z", id: "m1")])
        let draft = try await fixture.service.invoice(tenant: "acme", period: try #require(BillingPeriod("2026-03")))
        #expect(draft.status == .draft)
        #expect(draft.sha256 == nil)
        #expect(draft.invoice.total == "30.00")

        try fixture.setNow("2026-04-03T23:59:59Z")  // grace (72h) not over: still a draft
        #expect(try await fixture.service.invoice(tenant: "acme", period: try #require(BillingPeriod("2026-03"))).status == .draft)

        try fixture.setNow("2026-04-05T00:00:00Z")
        let march = try #require(BillingPeriod("2026-03"))
        // Closed: a read prices the final invoice but stores nothing; the freezer stores it.
        let unfrozen = try await fixture.service.invoice(tenant: "acme", period: march)
        #expect(unfrozen.status == .final && unfrozen.finalizedAt == nil)
        #expect(try await InvoiceReadTests.finalInvoiceCount(fixture) == 0)
        #expect(try await fixture.service.freezeClosedPeriods() == 4)  // acme's March; globex (assigned) January to March
        #expect(try await fixture.service.freezeClosedPeriods() == 0)
        let final = try await fixture.service.invoice(tenant: "acme", period: march)
        #expect(final.status == .final && final.finalizedAt != nil)
        let hash = try #require(final.sha256)
        #expect(hash == unfrozen.sha256)
        #expect(hash == Invoicing.sha256(try final.invoice.canonicalJSON()))
        #expect(final.invoice.total == "30.00")

        // 5,000 late calls for March arrive in April: billed in April as an adjustment.
        let outcome = try await fixture.commit([try BillingFixture.event("acme", 5_000, at: "2026-03-06T10:00:00Z", id: "late")])
        #expect(outcome.adjusted == 1)
        let again = try await fixture.service.invoice(tenant: "acme", period: march)
        #expect(again.sha256 == hash)
        #expect(again.invoice == final.invoice)

        let april = try await fixture.service.invoice(tenant: "acme", period: march.next)
        #expect(april.status == .draft)
        let adjustment = try #require(april.invoice.lines.first { $0.adjusts == "2026-03" })
        #expect(adjustment.kind == "adjustment")
        #expect(adjustment.quantity == "5000")
        #expect(adjustment.amount == "5.00")
        #expect(april.invoice.adjustments == "5.00")
        #expect(april.invoice.total == "5.00")

        // The frozen row is in the collector's table, byte for byte what is served.
        let stored = try await fixture.writer.perform { store throws(LedgerError) in
            try store.finalInvoice(tenant: "acme", period: march)
        }
        #expect(stored?.sha256 == hash)
        #expect(stored?.json == (try final.invoice.canonicalJSON()))
        await fixture.shutdown()
    }

    /// `tallyctl audit` finds no drift on a healthy ledger and exits 1 on an injected one.
    @Test func auditFindsInjectedDrift() async throws {
        let fixture = try BillingFixture()
        try await fixture.commit([
            try BillingFixture.event("acme", 7, at: "2026-03-02T10:00:00Z", id: "1", [("endpoint", "/search")]),
            try BillingFixture.event("acme", 3, at: "2026-03-02T11:00:00Z", id: "2"),
            try BillingFixture.event("globex", 2, at: "2026-03-03T11:00:00Z", id: "3", [("endpoint", "/items")]),
        ])
        await fixture.shutdown()
        let healthyAudit = try AuditCommand.parse(["--store", "sqlite:\(fixture.path)"])
        try await healthyAudit.run()

        let sql = "UPDATE usage_hourly SET sum = '8' WHERE tenant = 'acme' AND dimension = 'endpoint' AND value = '/search';"
        #expect(try fixture.tamper(sql) == 0)

        let driftedAudit = try AuditCommand.parse(["--store", "sqlite:\(fixture.path)", "--tenant", "acme", "--period", "2026-03"])
        await #expect(throws: ExitCode(1)) { try await driftedAudit.run() }
    }
}

/// A stand-in billing platform: dedupes meter events by identifier, like Stripe, and fails the
/// first `failures` requests with a 500.
final class MockPlatform: Sendable {
    struct State {
        var values: [String: String] = [:]
        var requests = 0
        var failuresLeft = 0
        var identifiersSeen: [String] = []
    }
    let state = Mutex(State())

    /// The platform's HTTP server: plain HTTP (`.http1()`) or HTTPS (`.tls(...)`).
    func application(server: HTTPServerBuilder = .http1()) -> some ApplicationProtocol {
        let router = Router()
        router.post("v1/billing/meter_events") { request, _ -> Response in
            let body = try await String(buffer: request.body.collect(upTo: 1 << 20))
            var fields: [String: String] = [:]
            for pair in body.split(separator: "&") {
                let parts = pair.split(separator: "=", maxSplits: 1).map { String($0).removingPercentEncoding ?? String($0) }
                if parts.count == 2 { fields[parts[0]] = parts[1] }
            }
            let fail = self.state.withLock { state -> Bool in
                state.requests += 1
                if state.failuresLeft > 0 {
                    state.failuresLeft -= 1
                    return true
                }
                guard let identifier = fields["identifier"], let value = fields["payload[value]"] else { return false }
                state.identifiersSeen.append(identifier)
                if state.values[identifier] == nil { state.values[identifier] = value }
                return false
            }
            return Response(status: fail ? .internalServerError : .ok)
        }
        return Application(router: router, server: server, configuration: .init(address: .hostname("127.0.0.1", port: 0)))
    }
}

@Suite struct TallyBillingExportTests {
    @Test func exportsAreIdempotentAcrossFailuresAndResends() async throws {
        let fixture = try BillingFixture(now: "2026-03-10T00:00:00Z")
        try await fixture.commit([
            try BillingFixture.event("acme", 4, at: "2026-03-02T10:05:00Z", id: "1"),
            try BillingFixture.event("acme", 6, at: "2026-03-02T10:55:00Z", id: "2"),
            try BillingFixture.event("acme", 5, at: "2026-03-03T07:00:00Z", id: "3"),
            try BillingFixture.event("acme", metric: "exports", 1, at: "2026-03-03T07:00:00Z", id: "x1", [("status", "200")]),
            try BillingFixture.event("acme", metric: "exports", 1, at: "2026-03-03T07:10:00Z", id: "x2", [("status", "500")]),
        ])
        let platform = MockPlatform()
        platform.state.withLock { $0.failuresLeft = 2 }
        try await platform.application().test(.live) { client in
            let port = try #require(client.port)
            let exporter = MeterEventExporter(
                service: fixture.service,
                settings: .init(baseURL: "http://127.0.0.1:\(port)", maxAttempts: 4, initialBackoff: .milliseconds(1)))
            let march = try #require(BillingPeriod("2026-03"))
            let first = try await exporter.export(period: march, now: fixture.now)
            #expect(first.sent == 3)  // two api_calls hours, one exports hour (the failed export is filtered out)
            #expect(first.failed == 0)
            #expect(first.requests == 5)  // two 500s retried
            let totals = platform.state.withLock { $0.values }
            #expect(totals.count == 3)
            #expect(totals["tally-acme-api_calls-2026-03-02T10:00:00Z-r1"] == "10")
            #expect(totals["tally-acme-api_calls-2026-03-03T07:00:00Z-r1"] == "5")
            #expect(totals["tally-acme-exports-2026-03-03T07:00:00Z-r1"] == "1")

            // A rerun sends nothing new.
            let second = try await exporter.export(period: march, now: fixture.now)
            #expect(second.sent == 0 && second.alreadySent == 3 && second.requests == 0)

            // Forget the acknowledgements (as after a lost answer): the resend uses the same identifiers.
            try await fixture.writer.perform { store throws(LedgerError) in
                let invoices = store
                for var record in try invoices.exportRecords(tenant: "acme") {
                    record.status = .pending
                    try invoices.saveExportRecord(record)
                }
            }
            let resend = try await exporter.export(period: march, now: fixture.now)
            #expect(resend.sent == 3)
            let afterResend = platform.state.withLock { ($0.values, Set($0.identifiersSeen)) }
            #expect(afterResend.0 == totals)
            #expect(afterResend.1 == Set(totals.keys))

            // A late event raises an exported hour: only the difference goes out, under a new identifier.
            try await fixture.commit([try BillingFixture.event("acme", 2, at: "2026-03-02T10:30:00Z", id: "late")])
            let delta = try await exporter.export(period: march, now: fixture.now)
            #expect(delta.sent == 1)
            let final = platform.state.withLock { $0.values }
            #expect(final["tally-acme-api_calls-2026-03-02T10:00:00Z-r2"] == "2")
            #expect(final.count == 4)
        }
        await fixture.shutdown()
    }
}
