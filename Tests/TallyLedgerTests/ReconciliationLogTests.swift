import TallyCore
import Testing
@testable import TallyLedger

/// On SQLite (schema version 7) a batch's reconciliation counts travel through the aggregate log
/// and the fold sums them into `reconciliation`, as on PostgreSQL; the batch's transaction only
/// inserts the zero row of a (period, tenant, agent) the table lacks.
@Suite struct ReconciliationLogTests {
    /// The table's rows as stored, not merged: (period, tenant, agent) → received.
    func tableReceived(_ store: SQLiteLedgerStore) throws -> [String: Int64] {
        let select = try store.database.prepare("SELECT period, tenant, agent, received FROM reconciliation")
        defer { select.reset() }
        var rows: [String: Int64] = [:]
        while try select.step() { rows["\(select.text(0)) \(select.text(1)) \(select.text(2))"] = select.int64(3) }
        return rows
    }

    func logRows(_ store: SQLiteLedgerStore) throws -> (rows: Int64, withCounts: Int64, emptyCells: Int64) {
        let select = try store.database.prepare(
            """
            SELECT count(*), count(reconciliation),
                (SELECT count(*) FROM aggregate_log WHERE length(cells) = length(?1)) FROM aggregate_log
            """)
        defer { select.reset() }
        select.bind(1, blob: AggregateLogCodec.encode(AggregateCells()))
        _ = try select.step()
        return (select.int64(0), select.int64(1), select.int64(2))
    }

    func received(_ store: any LedgerStore) throws -> [String: Int64] {
        var rows: [String: Int64] = [:]
        for row in try store.reconciliation(ReconciliationFilter()) {
            rows["\(row.period) \(row.tenant) \(row.agent)"] = row.counts.received
        }
        return rows
    }

    /// The counts are in the log, not the table, until the fold; a batch of duplicates only
    /// (no cells) still logs its counts; a merging reader and a folding read agree, and the
    /// table holds every count once the log is folded.
    @Test func countsTravelThroughTheLogAndTheFoldSumsThem() throws {
        let ledger = try TestLedger(SQLiteFactory(), configuration: TestLedger.foldingOnRequest)
        let store = try #require(ledger.store as? SQLiteLedgerStore)
        // Opened first: opening a store folds the log.
        let reader = try SQLiteLedgerStore(path: ledger.location, configuration: TestLedger.foldingOnRequest)
        defer { reader.close() }
        #expect(reader.mergeUnfoldedLogOnRead())
        let events = [
            event("acme", quantity: "2", at: "2026-04-13T10:00:00Z", id: "a"),
            event("acme", quantity: "3", at: "2026-04-13T11:00:00Z", id: "b"),
            event("globex", quantity: "5", at: "2026-04-13T11:30:00Z", id: "c"),
        ]
        _ = try store.commit(batch(1, events))
        // The same events again: all duplicates, no cells.
        let resent = try store.commit(batch(2, events))
        #expect(resent.duplicate == 3 && resent.accepted == 0)
        _ = try store.commit(batch(1, agent: "agent-2", [event("acme", quantity: "1", at: "2026-04-13T12:00:00Z", id: "d")]))

        // The table has each (period, tenant, agent) row, at zero: a period's tenants read it alone.
        #expect(
            try tableReceived(store) == ["2026-04 acme agent-1": 0, "2026-04 globex agent-1": 0, "2026-04 acme agent-2": 0])
        #expect(try store.tenants(in: period("2026-04")) == ["acme", "globex"])
        #expect(try store.hasSeen(tenant: "globex", lookingFirstIn: period("2026-04")))
        let log = try logRows(store)
        #expect(log.rows == 3 && log.withCounts == 3 && log.emptyCells == 1)

        let expected = ["2026-04 acme agent-1": Int64(4), "2026-04 globex agent-1": 2, "2026-04 acme agent-2": 1]
        // A merging reader adds the log's counts in its snapshot and folds nothing.
        let merged = try reader.withSnapshot { () throws(LedgerError) in
            (
                try reader.reconciliation(ReconciliationFilter()),
                try reader.reconciliation(ReconciliationFilter(tenant: "acme", agent: "agent-1"))
            )
        }
        #expect(Dictionary(uniqueKeysWithValues: merged.0.map { ("\($0.period) \($0.tenant) \($0.agent)", $0.counts.received) }) == expected)
        #expect(merged.0.map(\.tenant) == ["acme", "acme", "globex"], "the table's order")
        #expect(merged.0.allSatisfy { $0.counts.balances })
        #expect(merged.1.count == 1 && merged.1.first?.counts.duplicate == 2 && merged.1.first?.counts.accepted == 2)
        #expect(try logRows(store).rows == 3, "the reader folded nothing")

        // A plain read folds first: the table then holds the sums, and the log is empty.
        #expect(try received(store) == expected)
        #expect(try tableReceived(store) == expected)
        #expect(try logRows(store).rows == 0)

        // Later batches add onto the folded rows, once each.
        _ = try store.commit(batch(3, [event("acme", quantity: "7", at: "2026-04-13T13:00:00Z", id: "e")]))
        _ = try store.commit(batch(4, [event("initech", quantity: "7", at: "2026-04-13T13:00:00Z", id: "f")]))
        try store.foldAggregates()
        var after = expected
        after["2026-04 acme agent-1"] = 5
        after["2026-04 initech agent-1"] = 1
        #expect(try tableReceived(store) == after)
        #expect(try received(store) == after)
    }

    /// A fold that reads the rows back (the store reopened with rows in its log, so its
    /// in-memory mirror does not know them) sums the same counts as the mirror does.
    @Test func aFoldFromTheRowsSumsTheCountsTheMirrorWould() throws {
        let ledger = try TestLedger(SQLiteFactory(), configuration: TestLedger.foldingOnRequest)
        let events = workload(count: 1200, seed: 5, start: at("2026-04-13T00:00:00Z"), spanHours: 6, tenants: 7)
        let reference = try TestLedger(SQLiteFactory(), configuration: TestLedger.foldingOnRequest)
        for (index, slice) in stride(from: 0, to: events.count, by: 100).map({ Array(events[$0..<min($0 + 100, events.count)]) })
            .enumerated()
        {
            _ = try ledger.store.commit(batch(UInt64(index + 1), slice))
            _ = try reference.store.commit(batch(UInt64(index + 1), slice))
        }
        // Another connection folds this log: its mirror never saw the rows.
        let other = try SQLiteLedgerStore(path: ledger.location, configuration: TestLedger.foldingOnRequest)
        #expect(other.foldsReadingRows == 1, "opening folds the log, from its rows")
        other.close()
        #expect(try received(ledger.store) == (try received(reference.store)))
        #expect(try received(reference.store).values.reduce(0, +) == 1200)
    }

    /// A version-6 file (no counts column; its log rows' counts in the table already) opens as
    /// version 7 with the column added, and its rows and the new ones are counted once.
    @Test func aVersion6FileGetsTheColumnAndCountsOnce() throws {
        let ledger = try TestLedger(SQLiteFactory(), configuration: TestLedger.foldingOnRequest)
        let store = try #require(ledger.store as? SQLiteLedgerStore)
        _ = try store.commit(batch(1, [event("acme", quantity: "2", at: "2026-04-13T10:00:00Z", id: "a")]))
        try store.foldAggregates()
        _ = try store.commit(batch(2, [event("acme", quantity: "3", at: "2026-04-13T11:00:00Z", id: "b")]))
        // As version 6 left it: the batch's counts upserted into the table, its row without them.
        try store.database.execute(
            """
            UPDATE reconciliation SET received = received + 1, accepted = accepted + 1;
            ALTER TABLE aggregate_log DROP COLUMN reconciliation;
            UPDATE ledger_meta SET value = '6' WHERE key = 'schema_version';
            """)
        // Closed as by a crash: closing the store would fold its log from its memory.
        store.database.close()
        try ledger.reopen()
        let reopened = try #require(ledger.store as? SQLiteLedgerStore)
        let version = try reopened.database.prepare("SELECT value FROM ledger_meta WHERE key = 'schema_version'")
        #expect(try version.step() && version.text(0) == "7")
        version.reset()
        #expect(try received(reopened) == ["2026-04 acme agent-1": 2])
        _ = try reopened.commit(batch(3, [event("acme", quantity: "4", at: "2026-04-13T12:00:00Z", id: "c")]))
        #expect(try received(reopened) == ["2026-04 acme agent-1": 3])
        #expect(try reopened.periodTotals(tenant: "acme", metric: "api_calls", period: period("2026-04")).usage?.count == 3)
    }
}
