import TallyCore
@testable import TallyLedger
import Testing

/// Corrections on every backend: void and amend change the aggregates in the same transaction,
/// the raw event never changes, a replay of the same key is the stored record, a key reused or
/// an impossible correction is refused with nothing written, a closed period's correction is
/// billed in the earliest open period, and the audit (raw events plus corrections) finds no drift.
@Suite struct LedgerContractCorrectionTests {
    static let a = event(quantity: "10", at: "2026-04-13T10:00:00Z", id: "c1", [("endpoint", "/a")])
    static let b = event(quantity: "20", at: "2026-04-13T11:00:00Z", id: "c2", [("endpoint", "/b")])
    static let march = event(quantity: "100", at: "2026-03-20T09:00:00Z", id: "m1", [("endpoint", "/a")])
    static let user = event("acme", "active_users", quantity: "1", at: "2026-04-13T10:00:00Z", id: "u1", [("user", "ann")])

    func request(_ key: String, _ event: UsageEvent, _ action: CorrectionRequest.Action, reason: String = "customer dispute #12") -> CorrectionRequest
    {
        CorrectionRequest(
            key: key, tenant: event.tenant, timestamp: event.timestamp, fingerprint: Fingerprint(of: event), action: action, reason: reason,
            actor: "admin:1a2b3c4d")
    }

    /// Sum and count of the `dimension`/`value` cell(s) of `hours` billed as `billing`.
    func cell(
        _ store: any LedgerStore, _ hours: Range<Int64>, dimension: String = "", value: String = "", billing: BillingSelection = .ownPeriod
    ) throws -> (sum: String, count: Int64) {
        var total: UsageAggregate?
        try store.forEachCell(tenant: "acme", metric: "api_calls", dimension: dimension, hours: hours, coarsest: .month, billing: billing) {
            (_: Int64, found: String, aggregate: UsageAggregate) throws(LedgerError) in
            guard found == value else { return }
            if total == nil { total = aggregate } else { try total?.merge(aggregate) }
        }
        return (total?.sum.description ?? "none", total?.count ?? 0)
    }

    let april = at("2026-04-01T00:00:00Z").hourSinceEpoch..<at("2026-05-01T00:00:00Z").hourSinceEpoch
    let marchHours = at("2026-03-01T00:00:00Z").hourSinceEpoch..<at("2026-04-01T00:00:00Z").hourSinceEpoch

    @Test(arguments: ledgerFactories)
    func voidAndAmendInAnOpenPeriod(_ factory: any LedgerStoreFactory) throws {
        let ledger = try TestLedger(factory)
        _ = try ledger.store.commit(batch(1, [Self.a, Self.b, Self.user]))
        let now = at("2026-04-14T09:00:00Z")
        let voided = try ledger.store.applyCorrections([request("k1", Self.a, .void)], now: now)
        #expect(voided.count == 1 && voided.first?.action == "void" && voided.first?.billedIn == nil)
        #expect(voided.first?.quantityBefore == Self.a.quantity && voided.first?.quantityAfter == nil && voided.first?.actor == "admin:1a2b3c4d")
        #expect(try cell(ledger.store, april) == ("20", 1))
        #expect(try cell(ledger.store, april, dimension: "endpoint", value: "/a") == ("0", 0))

        // The same request again is the stored record and changes nothing; the key with another
        // request, or a second void of the event, is refused.
        #expect(try ledger.store.applyCorrections([request("k1", Self.a, .void)], now: at("2026-04-15T00:00:00Z")) == voided)
        #expect(try cell(ledger.store, april) == ("20", 1))
        #expect(throws: LedgerError.self) { try ledger.store.applyCorrections([request("k1", Self.a, .void, reason: "other")], now: now) }
        let again = #expect(throws: LedgerError.self) { try ledger.store.applyCorrections([request("k2", Self.a, .void)], now: now) }
        #expect("\(again.map { "\($0)" } ?? "")".contains("voided by correction 'k1'"))

        // Amend b twice: 20 at /b → 25 at /c → 30 (still /c).
        let amended = try ledger.store.applyCorrections(
            [request("k3", Self.b, .amend(quantity: Quantity(25), properties: Properties([("endpoint", "/c")])))], now: now)
        #expect(amended.first?.quantityBefore == Quantity(20) && amended.first?.propertiesBefore == Self.b.properties)
        _ = try ledger.store.applyCorrections([request("k4", Self.b, .amend(quantity: Quantity(30), properties: nil))], now: now)
        #expect(try cell(ledger.store, april) == ("30", 1))
        #expect(try cell(ledger.store, april, dimension: "endpoint", value: "/b") == ("0", 0))
        #expect(try cell(ledger.store, april, dimension: "endpoint", value: "/c") == ("30", 1))

        // All or nothing: a good correction beside an impossible one is not applied either.
        let unknown = event(quantity: "1", at: "2026-04-13T12:00:00Z", id: "never")
        #expect(throws: LedgerError.self) {
            try ledger.store.applyCorrections(
                [request("k5", Self.b, .amend(quantity: Quantity(1), properties: nil)), request("k6", unknown, .void)], now: now)
        }
        #expect(try cell(ledger.store, april) == ("30", 1))
        #expect(throws: LedgerError.self) { try ledger.store.applyCorrections([request("k7", Self.user, .void)], now: now) }
        #expect(throws: LedgerError.self) { try ledger.store.applyCorrections([request("k8", Self.b, .void, reason: "  ")], now: now) }

        // The raw events are as they arrived; the corrections are listed in order; the audit
        // (raw events plus corrections) finds no drift, also after a reopen.
        var raw: [UsageEvent] = []
        try ledger.store.scanRawEvents(tenant: "acme", period: period("2026-04")) { (record: LedgerRecord) throws(LedgerError) in
            raw.append(record.event)
        }
        #expect(Set(raw) == [Self.a, Self.b, Self.user])
        #expect(try ledger.store.corrections(CorrectionFilter(tenant: "acme")).map(\.key) == ["k1", "k3", "k4"])
        #expect(
            try ledger.store.corrections(CorrectionFilter(event: RawKey(timestamp: Self.b.timestamp, fingerprint: Fingerprint(of: Self.b))))
                .map(\.key) == ["k3", "k4"])
        try ledger.reopen()
        let drift = try ledger.store.recomputeAggregates(tenant: nil, period: period("2026-04"))
        #expect(drift.differences.isEmpty && drift.cellsCompared > 0, "\(drift)")
    }

    @Test(arguments: ledgerFactories)
    func aClosedPeriodIsCorrectedInTheEarliestOpenOne(_ factory: any LedgerStoreFactory) throws {
        let ledger = try TestLedger(factory)
        _ = try ledger.store.commit(batch(1, now: "2026-03-21T00:00:00Z", [Self.march]))
        // March closed on April 4 (72 h of grace): on April 10 the void is billed in April.
        let records = try ledger.store.applyCorrections([request("m-void", Self.march, .void)], now: at("2026-04-10T00:00:00Z"))
        #expect(records.first?.billedIn == period("2026-04"))
        #expect(try cell(ledger.store, marchHours) == ("100", 1), "March as billed is unchanged")
        #expect(try cell(ledger.store, marchHours, billing: .adjustmentsIn(period("2026-04"))) == ("-100", -1))
        #expect(try cell(ledger.store, marchHours, billing: .billedThrough(period("2026-04"))) == ("0", 0))
        #expect(try ledger.store.adjustedPeriods(tenant: "acme", billedIn: period("2026-04")) == [period("2026-03")])
        let drift = try ledger.store.recomputeAggregates(tenant: "acme", period: period("2026-03"))
        #expect(drift.differences.isEmpty && drift.cellsCompared > 0, "\(drift)")
    }

    @Test(arguments: ledgerFactories)
    func backfillRecordsAreSavedAndReplaced(_ factory: any LedgerStoreFactory) throws {
        let ledger = try TestLedger(factory)
        var record = BackfillRecord(
            id: "b-1", reason: "gateway logs", actor: "tallyctl:ops", source: "/data/gw.ndjson", startedAt: at("2026-04-13T12:00:00Z"))
        try ledger.store.saveBackfill(record)
        #expect(try ledger.store.backfills() == [record])
        record.counts.received = 10
        record.counts.accepted = 7
        record.counts.duplicate = 1
        record.counts.late = 1
        record.counts.adjusted = 1
        record.counts.rejected = 1
        record.finished = true
        record.revertedAt = at("2026-04-14T00:00:00Z")
        record.revertReason = "wrong file"
        try ledger.store.saveBackfill(record)
        let other = BackfillRecord(id: "b-0", reason: "r", actor: "a", source: "s", startedAt: at("2026-04-12T00:00:00Z"))
        try ledger.store.saveBackfill(other)
        try ledger.reopen()
        #expect(try ledger.store.backfills() == [other, record])
    }

    /// With ``LedgerConfiguration/minimumMetrics`` only those metrics' cells keep a minimum (the
    /// others store none, which costs the fold nothing); the audit recomputes the same.
    @Test(arguments: ledgerFactories)
    func minimumsAreKeptOnlyForTheMetricsThatAskForThem(_ factory: any LedgerStoreFactory) throws {
        var configuration = TestLedger.configuration
        configuration.minimumMetrics = ["latency_ms"]
        let ledger = try TestLedger(factory, configuration: configuration)
        let slow = event("acme", "latency_ms", quantity: "40", at: "2026-04-13T10:00:00Z", id: "l1")
        let fast = event("acme", "latency_ms", quantity: "7", at: "2026-04-13T10:30:00Z", id: "l2")
        _ = try ledger.store.commit(batch(1, [Self.a, slow, fast]))
        let cells = try ledger.store.storedAggregates(tenant: "acme", period: period("2026-04"), grain: .month)
        let totals = cells.filter { $0.key.dimension.isEmpty }
        #expect(totals.first { $0.key.metric == "latency_ms" }?.value.min == Quantity(7))
        #expect(totals.first { $0.key.metric == "api_calls" }.map { $0.value.min == nil } == true)
        let drift = try ledger.store.recomputeAggregates(tenant: "acme", period: period("2026-04"))
        #expect(drift.differences.isEmpty && drift.cellsCompared > 0, "\(drift)")
    }
}
