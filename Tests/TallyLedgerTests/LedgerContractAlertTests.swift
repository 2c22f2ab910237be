import TallyCore
@testable import TallyLedger
import Testing

/// The usage alert records every backend keeps: a crossing is claimed once per (tenant, alert,
/// period) whichever store claims first, an attempt is leased by one store at a time, and the
/// outcome of an attempt is kept and listed.
@Suite struct LedgerContractAlertTests {
    func record(_ tenant: String = "acme", alert: String = "calls-1k", period: String = "2026-03", at time: String) throws -> AlertRecord {
        AlertRecord(
            tenant: tenant, alert: alert, period: try #require(BillingPeriod(period)), metric: "api_calls", kind: "quantity",
            threshold: "1000", observed: "1004", limit: "1000", crossedAt: at(time))
    }

    @Test(arguments: ledgerFactories)
    func aCrossingIsClaimedOnceAndLeasedByOneStoreAtATime(_ factory: any LedgerStoreFactory) throws {
        let ledger = try TestLedger(factory)
        let other = try factory.open(ledger.location, configuration: ledger.configuration)
        defer { other.close() }
        let crossing = try record(at: "2026-03-10T12:00:00Z")
        #expect(crossing.identifier.hasPrefix("alert_") && crossing.identifier.count == 38)
        #expect(try ledger.store.claimAlert(crossing))
        // The other collector finds the same crossing a moment later, with another figure: it
        // claims nothing, and the stored record is the first one.
        var later = crossing
        later.observed = "1010"
        later.crossedAt = at("2026-03-10T12:00:05Z")
        #expect(try !other.claimAlert(later))
        #expect(try other.alertRecords(tenant: nil, period: nil) == [crossing])

        // Due at once; the first lease wins, the second finds it leased.
        let now = at("2026-03-10T12:00:01Z")
        #expect(try other.dueAlerts(now: now, limit: 10).map(\.identifier) == [crossing.identifier])
        let leased = try #require(try ledger.store.leaseAlert(identifier: crossing.identifier, now: now, until: at("2026-03-10T12:01:00Z")))
        #expect(leased.attempts == 1 && leased.attemptedAt == now && leased.nextAttemptAt == at("2026-03-10T12:01:00Z"))
        #expect(try other.leaseAlert(identifier: crossing.identifier, now: now, until: at("2026-03-10T12:01:00Z")) == nil)
        #expect(try other.dueAlerts(now: now, limit: 10).isEmpty)

        // The attempt fails: pending, due again after the backoff, with the answer kept.
        try ledger.store.finishAlertAttempt(
            identifier: crossing.identifier, delivered: false, at: at("2026-03-10T12:00:02Z"), error: "HTTP 500: oops",
            nextAttemptAt: at("2026-03-10T12:00:12Z"))
        #expect(try other.dueAlerts(now: at("2026-03-10T12:00:11Z"), limit: 10).isEmpty)
        #expect(try other.dueAlerts(now: at("2026-03-10T12:00:12Z"), limit: 10).first?.lastError == "HTTP 500: oops")

        // The lease of a collector that died runs out: another one takes the next attempt.
        let second = try #require(
            try other.leaseAlert(identifier: crossing.identifier, now: at("2026-03-10T12:00:20Z"), until: at("2026-03-10T12:01:20Z")))
        #expect(second.attempts == 2)
        try other.finishAlertAttempt(
            identifier: crossing.identifier, delivered: true, at: at("2026-03-10T12:00:21Z"), error: nil, nextAttemptAt: at("2026-03-10T12:00:21Z"))
        let stored = try #require(try ledger.store.alertRecords(tenant: "acme", period: BillingPeriod("2026-03")).first)
        #expect(stored.status == .delivered && stored.deliveredAt == at("2026-03-10T12:00:21Z") && stored.attempts == 2)
        #expect(stored.lastError == nil && stored.observed == "1004" && stored.metric == "api_calls")
        // Delivered: never due, never leased, and a late finish of a dead attempt changes nothing.
        #expect(try ledger.store.dueAlerts(now: at("2027-01-01T00:00:00Z"), limit: 10).isEmpty)
        #expect(
            try ledger.store.leaseAlert(identifier: crossing.identifier, now: at("2027-01-01T00:00:00Z"), until: at("2027-01-02T00:00:00Z")) == nil)
        try ledger.store.finishAlertAttempt(
            identifier: crossing.identifier, delivered: false, at: at("2026-03-10T12:05:00Z"), error: "timeout",
            nextAttemptAt: at("2026-03-10T12:06:00Z"))
        #expect(try other.alertRecords(tenant: nil, period: nil) == [stored])
    }

    @Test(arguments: ledgerFactories)
    func alertsAreListedByPeriodTenantAndAlert(_ factory: any LedgerStoreFactory) throws {
        let ledger = try TestLedger(factory)
        let records = [
            try record("globex", alert: "b", period: "2026-04", at: "2026-04-02T00:00:00Z"),
            try record("acme", alert: "b", period: "2026-04", at: "2026-04-01T00:00:00Z"),
            try record("acme", alert: "a", period: "2026-04", at: "2026-04-03T00:00:00Z"),
            try record("acme", alert: "a", period: "2026-03", at: "2026-03-03T00:00:00Z"),
        ]
        for item in records { #expect(try ledger.store.claimAlert(item)) }
        var amount = try record("acme", alert: "spend", period: "2026-04", at: "2026-04-05T00:00:00Z")
        amount.metric = nil
        amount.kind = "amount"
        amount.identifier = AlertRecord.identifier(tenant: "acme", alert: "spend", period: try #require(BillingPeriod("2026-04")))
        #expect(try ledger.store.claimAlert(amount))
        let listed = try ledger.store.alertRecords(tenant: nil, period: nil)
        #expect(
            listed.map { "\($0.period) \($0.tenant) \($0.alert)" } == [
                "2026-03 acme a", "2026-04 acme a", "2026-04 acme b", "2026-04 acme spend", "2026-04 globex b",
            ])
        #expect(try ledger.store.alertRecords(tenant: "acme", period: BillingPeriod("2026-04")).count == 3)
        #expect(try ledger.store.alertRecords(tenant: nil, period: BillingPeriod("2026-03")).map(\.tenant) == ["acme"])
        #expect(try ledger.store.alertRecords(tenant: "acme", period: nil).first { $0.alert == "spend" }?.metric == nil)
        // Oldest crossing first, at most the limit.
        #expect(try ledger.store.dueAlerts(now: at("2026-05-01T00:00:00Z"), limit: 2).map(\.alert) == ["a", "b"])
        #expect(try ledger.store.dueAlerts(now: at("2026-05-01T00:00:00Z"), limit: 2).map(\.period.description) == ["2026-03", "2026-04"])
        // The identifier depends on all three parts.
        let march = try #require(BillingPeriod("2026-03"))
        let ids = Set([
            AlertRecord.identifier(tenant: "acme", alert: "a", period: march),
            AlertRecord.identifier(tenant: "acme", alert: "a", period: march.next),
            AlertRecord.identifier(tenant: "acme", alert: "b", period: march),
            AlertRecord.identifier(tenant: "acm", alert: "ea", period: march),
        ])
        #expect(ids.count == 4)
    }
}
