import TallyCore
@testable import TallyLedger
import TallyTestSupport
import Testing

/// The rest of the contract every backend meets: billing reads, final invoices, export records,
/// and two stores on one ledger (two collectors of a cluster, or `tallyctl audit` beside one).
@Suite(.offThePool) struct LedgerContractBillingTests {
    /// March usage, a late March event billed in April, April usage, unique values in both.
    func billingLedger(_ factory: any LedgerStoreFactory) throws -> TestLedger {
        let ledger = try TestLedger(factory)
        _ = try ledger.store.commit(
            batch(
                1, now: "2026-03-20T00:00:00Z",
                [
                    event(quantity: "2", at: "2026-03-10T01:15:00Z", id: "m1", [("endpoint", "/a")]),
                    event(quantity: "3", at: "2026-03-10T01:45:00Z", id: "m2", [("endpoint", "/b")]),
                    event("globex", quantity: "7", at: "2026-03-11T00:00:00Z", id: "g1"),
                    event("acme", "active_users", at: "2026-03-12T00:00:00Z", id: "u1", [("user", "ann")]),
                ]))
        _ = try ledger.store.commit(
            batch(
                2, now: "2026-04-05T00:00:00Z",
                [
                    event(quantity: "5", at: "2026-03-30T12:00:00Z", id: "late"),  // March closed: adjusted into April
                    event(quantity: "11", at: "2026-04-04T10:00:00Z", id: "a1", [("endpoint", "/a")]),
                    event("acme", "active_users", at: "2026-03-31T00:00:00Z", id: "u2", [("user", "bob")]),
                    event("acme", "active_users", at: "2026-04-01T00:00:00Z", id: "u3", [("user", "ann")]),
                ]))
        return ledger
    }

    func hours(_ month: String) -> Range<Int64> {
        period(month).start.hourSinceEpoch..<period(month).end.hourSinceEpoch
    }

    @Test(arguments: ledgerFactories)
    func billingReadsSeparateOwnPeriodFromAdjustments(_ factory: any LedgerStoreFactory) throws {
        let ledger = try billingLedger(factory)
        let store = ledger.store
        let own = try store.billableAggregates(tenant: "acme", metric: "api_calls", hours: hours("2026-03"), dimension: "", billing: .ownPeriod)
        #expect(own[""]?.sum == Quantity(5) && own[""]?.count == 2)
        let byEndpoint = try store.billableAggregates(
            tenant: "acme", metric: "api_calls", hours: hours("2026-03"), dimension: "endpoint", billing: .ownPeriod)
        #expect(byEndpoint["/a"]?.sum == Quantity(2) && byEndpoint["/b"]?.sum == Quantity(3))
        let adjusted = try store.billableAggregates(
            tenant: "acme", metric: "api_calls", hours: hours("2026-03"), dimension: "", billing: .adjustmentsIn(period("2026-04")))
        #expect(adjusted[""]?.sum == Quantity(5) && adjusted[""]?.count == 1)
        let before = try store.billableAggregates(
            tenant: "acme", metric: "api_calls", hours: hours("2026-03"), dimension: "", billing: .billedBefore(period("2026-04")))
        #expect(before[""]?.sum == Quantity(5))
        let through = try store.billableAggregates(
            tenant: "acme", metric: "api_calls", hours: hours("2026-03"), dimension: "", billing: .billedThrough(period("2026-04")))
        #expect(through[""]?.sum == Quantity(10) && through[""]?.count == 3)
        #expect(try store.adjustedPeriods(tenant: "acme", billedIn: period("2026-04")) == [period("2026-03")])
        #expect(try store.adjustedPeriods(tenant: "globex", billedIn: period("2026-04")).isEmpty)
        #expect(
            try store.distinctValues(
                tenant: "acme", metric: "active_users", property: "user", period: period("2026-03"), billedThrough: period("2026-03")) == 1)
        #expect(
            try store.distinctValues(
                tenant: "acme", metric: "active_users", property: "user", period: period("2026-03"), billedThrough: period("2026-04")) == 2)
        let hourly = try store.hourlyTotals(tenant: "acme", metric: "api_calls", hours: hours("2026-03"))
        #expect(hourly.map(\.aggregate.sum) == [Quantity(5), Quantity(5)])
        #expect(hourly.first?.hour == at("2026-03-10T01:00:00Z").hourSinceEpoch)
        #expect(try store.tenants(in: period("2026-03")) == ["acme", "globex"])
        #expect(try store.tenants(in: period("2026-04")) == ["acme"])
        #expect(try store.hasSeen(tenant: "globex", lookingFirstIn: period("2026-04")))
        #expect(try !store.hasSeen(tenant: "initech", lookingFirstIn: period("2026-04")))
    }

    @Test(arguments: ledgerFactories)
    func aFinalInvoiceIsWrittenOnceWhicheverStoreWritesFirst(_ factory: any LedgerStoreFactory) throws {
        let ledger = try billingLedger(factory)
        let second = try factory.open(ledger.location, configuration: ledger.configuration)
        defer { second.close() }
        #expect(try ledger.store.finalInvoice(tenant: "acme", period: period("2026-03")) == nil)
        let first = FinalInvoiceRecord(
            tenant: "acme", period: period("2026-03"), json: "{\"a\":1}", sha256: "aa", finalizedAt: at("2026-04-05T00:00:00Z"))
        let late = FinalInvoiceRecord(
            tenant: "acme", period: period("2026-03"), json: "{\"a\":2}", sha256: "bb", finalizedAt: at("2026-04-05T00:00:01Z"))
        #expect(try ledger.store.freezeInvoice(first) == first)
        // The other collector finalises the same period a moment later: it gets the first document.
        #expect(try second.freezeInvoice(late) == first)
        #expect(try second.finalInvoice(tenant: "acme", period: period("2026-03")) == first)
        #expect(try ledger.store.finalInvoice(tenant: "acme", period: period("2026-04")) == nil)
    }

    @Test(arguments: ledgerFactories)
    func exportRecordsAreSavedReplacedAndListed(_ factory: any LedgerStoreFactory) throws {
        let ledger = try TestLedger(factory)
        var record = ExportRecord(
            identifier: "acme-api-1", tenant: "acme", metric: "api_calls", hour: 490_000, value: Quantity(12), status: .pending, attempts: 0)
        try ledger.store.saveExportRecord(record)
        try ledger.store.saveExportRecord(
            ExportRecord(
                identifier: "globex-api-1", tenant: "globex", metric: "api_calls", hour: 490_000, value: Quantity(1), status: .failed, attempts: 3,
                lastError: "HTTP 500"))
        record.status = .sent
        record.attempts = 1
        record.sentAt = at("2026-04-05T00:00:00Z")
        record.attemptedAt = at("2026-04-04T23:59:59Z")
        try ledger.store.saveExportRecord(record)
        #expect(try ledger.store.exportRecord(identifier: "acme-api-1") == record)
        #expect(try ledger.store.exportRecord(identifier: "acme-api-1")?.attemptedAt == at("2026-04-04T23:59:59Z"))
        #expect(try ledger.store.exportRecord(identifier: "nobody") == nil)
        #expect(try ledger.store.exportRecords(tenant: "acme") == [record])
        let all = try ledger.store.exportRecords(tenant: nil)
        #expect(all.map(\.identifier) == ["acme-api-1", "globex-api-1"])
        #expect(all.last?.lastError == "HTTP 500" && all.last?.sentAt == nil)
    }

    /// An embedded ledger whose `usage_exports` was made before records kept their attempt time
    /// (PostgreSQL: migration 3) gets the column on first use and keeps its rows.
    @Test func anOldSQLiteExportTableGetsTheAttemptTime() throws {
        let factory = SQLiteFactory()
        let location = try factory.newLocation()
        defer { factory.destroy(location) }
        let store = try SQLiteLedgerStore(path: location, configuration: LedgerConfiguration())
        defer { store.close() }
        try store.database.execute(
            """
            CREATE TABLE usage_exports (identifier TEXT PRIMARY KEY, tenant TEXT NOT NULL, metric TEXT NOT NULL,
                hour INTEGER NOT NULL, value TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL, last_error TEXT,
                sent_at INTEGER) WITHOUT ROWID;
            INSERT INTO usage_exports VALUES ('old-1', 'acme', 'api_calls', 490000, '3', 'sent', 1, NULL, 1000000);
            """)
        let old = ExportRecord(
            identifier: "old-1", tenant: "acme", metric: "api_calls", hour: 490_000, value: Quantity(3), status: .sent, attempts: 1,
            sentAt: EventTime(microseconds: 1_000_000))
        #expect(try store.exportRecords(tenant: nil) == [old])
        var new = old
        new.identifier = "new-1"
        new.attemptedAt = at("2026-04-05T00:00:00Z")
        #expect(try store.claimExportRecord(new))
        #expect(try store.exportRecords(tenant: "acme") == [new, old])
    }

    /// Two collectors plan the same export at once: the first claim of an identifier wins, the
    /// second changes nothing and learns it lost, and a saved answer is not undone by a late claim.
    @Test(arguments: ledgerFactories)
    func anExportIdentifierIsClaimedOnceWhicheverStoreClaimsFirst(_ factory: any LedgerStoreFactory) throws {
        let ledger = try billingLedger(factory)
        let second = try factory.open(ledger.location, configuration: ledger.configuration)
        defer { second.close() }
        let mine = ExportRecord(
            identifier: "tally-acme-api_calls-r1", tenant: "acme", metric: "api_calls", hour: 490_000, value: Quantity(12),
            status: .pending, attempts: 0)
        var theirs = mine
        theirs.value = Quantity(13)
        #expect(try ledger.store.claimExportRecord(mine))
        #expect(try !second.claimExportRecord(theirs))
        #expect(try second.exportRecord(identifier: mine.identifier) == mine)
        var sent = mine
        sent.status = .sent
        sent.attempts = 1
        sent.sentAt = at("2026-04-05T00:00:00Z")
        try second.saveExportRecord(sent)
        #expect(try !ledger.store.claimExportRecord(mine))
        #expect(try ledger.store.exportRecords(tenant: "acme") == [sent])
        var other = mine
        other.identifier = "tally-acme-api_calls-r2"
        #expect(try second.claimExportRecord(other))
        #expect(try ledger.store.exportRecords(tenant: nil).map(\.identifier) == [mine.identifier, other.identifier])
    }

    /// Two collectors on one ledger: a batch resent to the other one after a failover is answered
    /// from the record, an event seen by one is a duplicate at the other, each logged cell is
    /// folded once whichever store folds, and both read the same totals.
    @Test(arguments: ledgerFactories)
    func twoStoresOnOneLedgerCountEveryEventOnce(_ factory: any LedgerStoreFactory) throws {
        let ledger = try TestLedger(factory)
        let other = try factory.open(ledger.location, configuration: ledger.configuration)
        defer { other.close() }
        let events = workload(count: 1000, seed: 11, start: at("2026-04-01T00:00:00Z"), spanHours: 100, tenants: 4)
        var first: [UInt64: BatchOutcome] = [:]
        for (sequence, offset) in stride(from: 0, to: events.count, by: 100).enumerated() {
            let incoming = batch(UInt64(sequence), now: "2026-04-10T00:00:00Z", Array(events[offset..<(offset + 100)]))
            // Even batches go to one collector, odd to the other; then each is "resent" to the other.
            let (a, b) = sequence.isMultiple(of: 2) ? (ledger.store, other) : (other, ledger.store)
            first[UInt64(sequence)] = try a.commit(incoming)
            #expect(try b.commit(incoming) == first[UInt64(sequence)])
        }
        // The same events from another agent: every one a duplicate, whichever store takes it.
        let again = try other.commit(batch(0, agent: "agent-2", now: "2026-04-10T00:00:00Z", Array(events[0..<100])))
        #expect(again.accepted == 0 && again.duplicate == 100)
        let accepted = first.values.reduce(0) { $0 + $1.accepted }
        let distinct = Set(events.map { Fingerprint(of: $0) }).count
        #expect(accepted == distinct)
        for tenant in 0..<4 {
            let mine = try ledger.store.storedAggregates(tenant: "tenant-\(tenant)", period: period("2026-04"), grain: .month)
            let theirs = try other.storedAggregates(tenant: "tenant-\(tenant)", period: period("2026-04"), grain: .month)
            #expect(mine == theirs)
            #expect(try other.recomputeAggregates(tenant: "tenant-\(tenant)", period: period("2026-04")).differences.isEmpty)
        }
        let rows = try ledger.store.reconciliation(ReconciliationFilter())
        #expect(rows.total.received == 1100 && rows.total.accepted == Int64(distinct) && rows.allSatisfy { $0.counts.balances })
    }
}

/// ``LedgerRules`` without a store: the decisions themselves.
@Suite struct LedgerRulesTests {
    let window = LateWindow.standard

    @Test func classifyRefusesOldAndFutureAndDedupesWithinTheBatchFirstWins() throws {
        var incoming = batch(
            1, now: "2026-04-13T13:00:00Z",
            [
                event(id: "a"), event(id: "a"), event(at: "2026-01-01T00:00:00Z", id: "old"),
                event(at: "2026-05-13T13:00:00Z", id: "future"), event(id: "b"),
            ])
        incoming.events.append(.invalid(InvalidEvent(EventRejection(.malformed, field: nil, "not JSON"), tenant: "acme")))
        let classification = LedgerRules.classify(PreparedBatch(incoming), window: window)
        #expect(classification.candidates.map(\.index) == [0, 4])
        #expect(classification.repeats.map(\.index) == [1])
        #expect(classification.refusals.map(\.index) == [2, 3, 5])
        #expect(classification.refusals.map(\.invalid.rejection.reason) == [.tooOld, .futureTimestamp, .malformed])
        #expect(classification.refusals[0].fingerprint != nil && classification.refusals[2].fingerprint == nil)
    }

    /// One future-timestamp rule with one message: the collector's validation and the ledger's
    /// rules refuse the same event the same way, and draw the line at the same instant.
    @Test func theFutureRuleIsOneRule() throws {
        let now = at("2026-04-13T13:00:00Z")
        let skew = window.maxFutureSkew
        let edge = event(at: "2026-04-13T13:05:00Z", id: "edge")
        let beyond = event(at: "2026-04-13T13:05:00.000001Z", id: "beyond")
        let classification = LedgerRules.classify(PreparedBatch(batch(1, now: "2026-04-13T13:00:00Z", [edge, beyond])), window: window)
        #expect(classification.candidates.map(\.index) == [0])
        let fromRules = try #require(classification.refusals.first?.invalid.rejection)
        var fromValidation: EventRejection?
        do throws(EventRejection) { try beyond.validate(limits: EventLimits(), now: now) } catch { fromValidation = error }
        #expect(fromRules == fromValidation)
        #expect(fromRules == EventRejection.future(beyond.timestamp, now: now, skew: skew))
        #expect(fromRules.message.contains("more than 5m ahead of the time it arrived"), "\(fromRules.message)")
        #expect(EventRejection.future(edge.timestamp, now: now, skew: skew) == nil)
    }

    @Test func theStoresAnswerDecidesDuplicatesAndOnlyNewRowsAreBilled() throws {
        let incoming = batch(
            1, now: "2026-04-05T00:00:00Z",
            [
                event(quantity: "2", at: "2026-04-04T00:00:00Z", id: "a", [("endpoint", "/x")]),
                event(quantity: "3", at: "2026-03-30T00:00:00Z", id: "late"),
                event(quantity: "4", at: "2026-04-04T00:00:00Z", id: "seen-before"),
                event(quantity: "2", at: "2026-04-04T00:00:00Z", id: "a", [("endpoint", "/x")]),
            ])
        let classification = LedgerRules.classify(PreparedBatch(incoming), window: window)
        try #require(classification.candidates.map(\.status) == [.accepted, .adjusted, .accepted])
        let plan = try classification.plan(existing: [false, false, true], groupBy: ["endpoint"], uniqueCounts: [:])
        #expect(plan.outcome.accepted == 1 && plan.outcome.adjusted == 1 && plan.outcome.late == 1 && plan.outcome.duplicate == 2)
        #expect(plan.outcome.received == 4)
        #expect(plan.inserted.map(\.index) == [0, 1])
        #expect(plan.duplicates.map(\.index) == [2, 3])
        #expect(try plan.cells.totalSum() == Quantity(5))
        #expect(plan.cells.cells.keys.contains { $0.billedIn == period("2026-04") })
        #expect(plan.reconciliation.map(\.period) == [period("2026-03"), period("2026-04")])
        #expect(plan.reconciliation.allSatisfy { $0.counts.balances })
        // Nothing existed: the same batch bills all three candidates.
        let fresh = try classification.plan(existing: [false, false, false], groupBy: [], uniqueCounts: [:])
        #expect(fresh.outcome.accepted == 2 && fresh.outcome.duplicate == 1)
        #expect(try fresh.cells.totalSum() == Quantity(9))
    }

    @Test func theRejectPolicyKeepsLateEventsUnbilled() throws {
        var window = LateWindow.standard
        window.policy = .reject
        let classification = LedgerRules.classify(
            PreparedBatch(batch(1, now: "2026-04-05T00:00:00Z", [event(at: "2026-03-30T00:00:00Z", id: "late")])), window: window)
        let plan = try classification.plan(existing: [false], groupBy: [], uniqueCounts: [:])
        #expect(plan.outcome.late == 1 && plan.outcome.adjusted == 0 && plan.outcome.rejections == [.init(index: 0, reason: .late)])
        #expect(plan.cells.isEmpty && plan.inserted.count == 1)
    }
}
