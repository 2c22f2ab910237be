import Foundation
import TallyCore
import TallyTestSupport
import Testing
@testable import TallyLedger

/// A reader that merges the unfolded aggregate log (`mergeUnfoldedLogOnRead`) answers every
/// aggregate read exactly as a store that folds first, whatever the writer has folded or not,
/// and never folds itself.
@Suite(.offThePool) struct UnfoldedLogReadTests {
    /// Two ledgers get the same batches. The reference folds before every read, as stores always
    /// did. The other's writer folds at random moments, and its answers come from a second
    /// connection that merges the log in its snapshot. Every round, every read must agree.
    ///
    /// On PostgreSQL the reads a reader cannot merge (stored cells, the overview) must refuse
    /// while the log has rows, so that the collector asks a writer, and answer when it is empty.
    /// Its reconciliation, folded from the log there, is merged like the cells.
    @Test(arguments: ledgerFactories.map(\.description), [UInt64(11), 12, 13])
    func aMergingReaderAnswersLikeAStoreThatFoldsFirst(backend: String, seed: UInt64) throws {
        let factory = try #require(ledgerFactories.first { $0.description == backend })
        let configuration = TestLedger.foldingOnRequest
        let reference = try TestLedger(SQLiteFactory(), configuration: configuration)
        let ledger = try TestLedger(factory, configuration: configuration)
        let reader = try factory.open(ledger.location, configuration: configuration)
        defer { reader.close() }
        #expect(reader.mergeUnfoldedLogOnRead())
        // SQLite merges every aggregate read; PostgreSQL all but the stored cells and overview.
        let mergesEverything = reader is SQLiteLedgerStore

        var random = SplitMix64(seed: seed)
        // February to April, received on April 11th: February and March are closed, so their
        // events are late and billed in April as adjustments.
        let events = workload(count: 3000, seed: seed, start: at("2026-02-20T00:00:00Z"), spanHours: 24 * 50, tenants: 3)
        var offset = 0
        var sequence: UInt64 = 0
        var roundsWithUnfoldedCells = 0
        while offset < events.count {
            for _ in 0..<(1 + random.next() % 3) where offset < events.count {
                let size = 20 + Int(random.next() % 150)
                let slice = Array(events[offset..<min(offset + size, events.count)])
                offset += slice.count
                sequence += 1
                let expected = try reference.store.commit(batch(sequence, now: "2026-04-11T00:00:00Z", slice))
                #expect(try ledger.store.commit(batch(sequence, now: "2026-04-11T00:00:00Z", slice)) == expected)
            }
            let unfolded = try ledger.store.hasUnfoldedAggregates()
            if unfolded { roundsWithUnfoldedCells += 1 }
            let merged = try reader.withSnapshot { () throws(LedgerError) in try Answers(reader, everything: mergesEverything) }
            let folded = try Answers(reference.store, everything: mergesEverything)
            if !mergesEverything {
                let refused: LedgerError? = {
                    do {
                        _ = try reader.withSnapshot { () throws(LedgerError) in
                            try reader.storedAggregates(tenant: nil, period: period("2026-03"), grain: .hour)
                        }
                        return nil
                    } catch { return error as? LedgerError }
                }()
                if unfolded {
                    #expect(refused == .readNeedsFold("a read of the overview, the stored cells or an audit"))
                } else {
                    #expect(refused == nil)
                }
            }
            let difference = merged.firstDifference(from: folded)
            #expect(difference == nil, "seed \(seed), after batch \(sequence): \(difference ?? "")")
            // The reader never folds: whatever was unfolded still is.
            #expect(try ledger.store.hasUnfoldedAggregates() == unfolded)
            if random.next() % 3 == 0 { try ledger.store.foldAggregates() }
        }
        #expect(roundsWithUnfoldedCells >= 10, "the reads must have had unfolded cells to merge")
        // And the audit, on the merging reader, finds the aggregates equal to the raw events
        // (PostgreSQL's audit reads the stored cells: a writer folds first, as the collector's
        // `Ledger` has one do).
        if !mergesEverything { try ledger.store.foldAggregates() }
        try reader.withSnapshot { () throws(LedgerError) in
            for tenant in 0..<3 {
                for month in ["2026-02", "2026-03", "2026-04"] {
                    let drift = try reader.recomputeAggregates(tenant: "tenant-\(tenant)", period: period(month))
                    #expect(drift.differences.isEmpty, "tenant-\(tenant) \(month): \(drift.differences.prefix(3))")
                }
            }
        }
    }

    /// Everything the collector's reads ask the aggregate tables, for three tenants.
    struct Answers: Equatable {
        var usage: [[UsageBucket]] = []
        var totals: [PeriodTotals] = []
        var hourly: [[Int64: UsageAggregate]] = []
        var adjusted: [[BillingPeriod]] = []
        var stored: [[AggregateCellKey: UsageAggregate]] = []
        var billable: [[String: UsageAggregate]] = []
        var periodUsage: [[TenantPeriodUsage]] = []
        var reconciliation: [[ReconciliationRow]] = []
        var tenants: [[String]] = []
        var seen: [Bool] = []

        /// Which read answered differently, and its two answers (nil if none did).
        func firstDifference(from other: Answers) -> String? {
            func first<T: Equatable>(_ name: String, _ mine: [T], _ theirs: [T]) -> String? {
                guard mine != theirs else { return nil }
                guard mine.count == theirs.count else { return "\(name): \(mine.count) answers vs \(theirs.count)" }
                guard let index = mine.indices.first(where: { mine[$0] != theirs[$0] }) else { return nil }
                return "\(name) #\(index): \(String(describing: mine[index]).prefix(400)) vs \(String(describing: theirs[index]).prefix(400))"
            }
            return first("usage", usage, other.usage) ?? first("periodTotals", totals, other.totals)
                ?? first("hourlyTotals", hourly, other.hourly) ?? first("adjustedPeriods", adjusted, other.adjusted)
                ?? first("storedAggregates", stored, other.stored) ?? first("billableAggregates", billable, other.billable)
                ?? first("periodUsage", periodUsage, other.periodUsage)
                ?? first("reconciliation", reconciliation, other.reconciliation) ?? first("tenants", tenants, other.tenants)
                ?? first("hasSeen", seen, other.seen)
        }

        /// The answers of `store`; without `everything`, only those of the reads every merging
        /// reader merges (not the stored cells or the overview).
        init(_ store: any LedgerStore, everything: Bool = true) throws(LedgerError) {
            let months = ["2026-02", "2026-03", "2026-04"].map(period)
            let from = at("2026-02-27T05:00:00Z")
            let to = at("2026-04-03T07:00:00Z")
            let selections: [BillingSelection] = [
                .ownPeriod, .adjustmentsIn(period("2026-04")), .billedBefore(period("2026-04")), .billedThrough(period("2026-03")),
            ]
            for month in months {
                tenants.append(try store.tenants(in: month))
                reconciliation.append(try store.reconciliation(ReconciliationFilter(period: month)))
            }
            reconciliation.append(try store.reconciliation(ReconciliationFilter()))
            reconciliation.append(try store.reconciliation(ReconciliationFilter(tenant: "tenant-1", agent: "agent-1")))
            for tenant in ["tenant-0", "tenant-1", "tenant-2", "tenant-9"] {
                seen.append(try store.hasSeen(tenant: tenant, lookingFirstIn: months[2]))
            }
            for tenant in (0..<3).map({ "tenant-\($0)" }) {
                for granularity in UsageQuery.Granularity.allCases {
                    for groupBy in [nil, "endpoint"] as [String?] {
                        usage.append(
                            try store.usage(
                                UsageQuery(tenant: tenant, metric: "api_calls", from: from, to: to, granularity: granularity, groupBy: groupBy)))
                    }
                }
                for metric in ["api_calls", "bytes_out"] {
                    for month in months { totals.append(try store.periodTotals(tenant: tenant, metric: metric, period: month)) }
                    var byHour: [Int64: UsageAggregate] = [:]
                    for (hour, aggregate) in try store.hourlyTotals(
                        tenant: tenant, metric: metric, hours: from.hourSinceEpoch..<to.hourSinceEpoch)
                    {
                        #expect(byHour[hour] == nil, "one row per hour")
                        byHour[hour] = aggregate
                    }
                    hourly.append(byHour)
                    for selection in selections {
                        billable.append(
                            try store.billableAggregates(
                                tenant: tenant, metric: metric, hours: months[0].start.hourSinceEpoch..<months[2].end.hourSinceEpoch,
                                dimension: "endpoint", billing: selection))
                    }
                }
                adjusted.append(try store.adjustedPeriods(tenant: tenant, billedIn: period("2026-04")))
                guard everything else { continue }
                for month in months {
                    for grain in AggregateGrain.allCases {
                        stored.append(try store.storedAggregates(tenant: tenant, period: month, grain: grain))
                    }
                }
            }
            guard everything else { return }
            for grain in AggregateGrain.allCases { stored.append(try store.storedAggregates(tenant: nil, period: months[1], grain: grain)) }
            for month in months {
                for search in [nil, "T-1"] as [String?] {
                    let kinds = [MetricDimension(metric: "api_calls"), MetricDimension(metric: "bytes_out", dimension: "endpoint")]
                    periodUsage.append(try store.periodUsage(PeriodUsageQuery(period: month, cells: kinds, search: search)))
                }
            }
        }
    }

    /// A fold between two reads starts the reader over: the log's row ids restart after a fold
    /// empties it, so rows the reader merged before must not hide the new ones.
    @Test(arguments: ledgerFactories.map(\.description))
    func aFoldBetweenReadsStartsTheReaderOver(backend: String) throws {
        let factory = try #require(ledgerFactories.first { $0.description == backend })
        let ledger = try TestLedger(factory)
        let reader = try factory.open(ledger.location, configuration: ledger.configuration)
        defer { reader.close() }
        _ = reader.mergeUnfoldedLogOnRead()
        let april = period("2026-04")
        func count() throws -> Int64? {
            try reader.withSnapshot { () throws(LedgerError) in
                try reader.periodTotals(tenant: "acme", metric: "api_calls", period: april).usage?.count
            }
        }
        _ = try ledger.store.commit(batch(1, [event(id: "a")]))
        _ = try ledger.store.commit(batch(2, [event(id: "b")]))
        #expect(try count() == 2)
        try ledger.store.foldAggregates()
        #expect(try count() == 2)
        // SQLite: logged again as row 1 of an empty log, and the reader had merged rows 1 and 2
        // before. PostgreSQL: a new generation, whose rows the reader has not merged.
        _ = try ledger.store.commit(batch(3, [event(id: "c")]))
        #expect(try ledger.store.hasUnfoldedAggregates())
        #expect(try count() == 3)
        _ = try ledger.store.commit(batch(4, [event(id: "d")]))
        #expect(try count() == 4)
        // Outside a snapshot the reader has nothing to merge in: it folds first, as before.
        #expect(try reader.periodTotals(tenant: "acme", metric: "api_calls", period: april).usage?.count == 4)
        #expect(try !reader.hasUnfoldedAggregates())
    }

    /// The selection rules match the stores' SQL on `billed_in` ('' for the own period).
    @Test func billingSelectionIncludesWhatTheQueriesSelect() {
        let march = period("2026-03")
        let april = period("2026-04")
        let may = period("2026-05")
        let cases: [(BillingSelection, [BillingPeriod?])] = [
            (.ownPeriod, [nil]),
            (.adjustmentsIn(april), [april]),
            (.billedBefore(april), [nil, march]),
            (.billedThrough(april), [nil, march, april]),
        ]
        for (selection, included) in cases {
            for billedIn in [nil, march, april, may] as [BillingPeriod?] {
                #expect(selection.includes(billedIn) == included.contains(billedIn), "\(selection) \(String(describing: billedIn))")
            }
        }
    }
}

/// A PostgreSQL reader's log bookkeeping: row ids come from several writers, not in commit order;
/// each read decodes only its tenant's sections of the rows taken since its last read.
@Suite struct PostgresUnfoldedLogTests {
    func row(
        _ cells: [(tenant: String, hour: Int64, count: Int64)], seed: Int64, layout: AggregateLogCodec.Layout = .byTenant
    ) throws
        -> [UInt8]
    {
        var all = AggregateCells()
        for (tenant, hour, count) in cells {
            var one = UsageAggregate(
                quantity: Quantity(1), timestamp: EventTime(microseconds: seed), fingerprint: Fingerprint(high: 0, low: UInt64(seed)))
            one.count = count
            try all.add(one, at: AggregateCellKey(tenant: tenant, metric: "api_calls", hour: hour))
        }
        return AggregateLogCodec.encode(all, layout: layout)
    }

    func merge(_ log: inout PostgresUnfoldedLog, _ id: Int64, count: Int64) throws {
        try log.add(row: id, cells: try row([("acme", 1, count)], seed: id))
    }

    func total(_ log: inout PostgresUnfoldedLog, _ tenant: String) throws -> Int64? {
        guard let cells = try log.cells(of: tenant) else { return nil }
        var total: Int64 = 0
        try cells.forEach(where: { _ in true }) { _, aggregate in total += aggregate.count }
        return total
    }

    @Test func aRowCommittedLateWithASmallerIdIsMergedAndNoRowTwice() throws {
        var log = PostgresUnfoldedLog()
        #expect(log.rowsToMerge(generation: 4, ids: [5, 7]) == [5, 7])
        try merge(&log, 5, count: 1)
        try merge(&log, 7, count: 1)
        #expect(try total(&log, "acme") == 2)
        // Row 6 commits after 7 was merged: only it is new.
        #expect(log.rowsToMerge(generation: 4, ids: [5, 6, 7, 8]) == [6, 8])
        try merge(&log, 6, count: 1)
        try merge(&log, 8, count: 1)
        #expect(try total(&log, "acme") == 4)
        #expect(throws: LedgerError.self) { try merge(&log, 8, count: 1) }
        #expect(try total(&log, "acme") == 4)
        // A fold (a new generation) starts over, even with the same ids.
        #expect(log.rowsToMerge(generation: 5, ids: [7, 9]) == [7, 9])
        #expect(log.rowCount == 0)
        #expect(try log.cells(of: "acme") == nil)
        // So does a merged row gone at the same generation (which a fold never leaves).
        try merge(&log, 7, count: 1)
        #expect(log.rowsToMerge(generation: 5, ids: [9]) == [9])
        #expect(log.rowCount == 0)
    }

    /// A tenant read for the first time gets every row taken in the generation, one read since
    /// gets the rows taken after; a flat row (logged by a collector of before) counts as well.
    @Test func eachTenantGetsEveryRowTakenWhateverWhenItIsFirstRead() throws {
        var log = PostgresUnfoldedLog()
        _ = log.rowsToMerge(generation: 1, ids: [1, 2, 3])
        try log.add(row: 1, cells: try row([("acme", 1, 2), ("globex", 1, 5)], seed: 1))
        try log.add(row: 2, cells: try row([("acme", 2, 3), ("initech", 1, 7)], seed: 2, layout: .flat))
        #expect(try total(&log, "acme") == 5)
        try log.add(row: 3, cells: try row([("globex", 1, 11), ("acme", 1, 1)], seed: 3))
        // globex first read now: rows 1 and 3; acme: its earlier cells and row 3's.
        #expect(try total(&log, "globex") == 16)
        #expect(try total(&log, "acme") == 6)
        #expect(try total(&log, "initech") == 7)
        #expect(try log.cells(of: "hooli") == nil)
        // Cells of the same key merge: acme's hour 1 is rows 1 and 3.
        var hourOne: Int64 = 0
        try log.cells(of: "acme")?.forEach(where: { $0.hour == 1 }) { _, aggregate in hourOne += aggregate.count }
        #expect(hourOne == 3)
    }

    /// A row that does not decode is refused when taken, and a section that lies outside its
    /// row when read, each as a corrupt row, never a crash.
    @Test func aCorruptRowIsRefused() throws {
        var log = PostgresUnfoldedLog()
        _ = log.rowsToMerge(generation: 1, ids: [1])
        var bytes = try row([("acme", 1, 2), ("globex", 1, 5)], seed: 1)
        bytes.removeLast(3)
        #expect(throws: LedgerError.self) { try log.add(row: 1, cells: bytes) }
        #expect(log.rowCount == 0)
        #expect(throws: LedgerError.self) { try log.add(row: 1, cells: [0xFF, 0xFF]) }
        let whole = try row([("acme", 1, 2)], seed: 1)
        var location: AggregateLogCodec.SectionLocation?
        _ = try whole.withUnsafeBytes { bytes in
            try AggregateLogCodec.sections(of: bytes) { _, found in location = found }
        }
        var outside = try #require(location)
        outside.bytes = outside.bytes.lowerBound..<(whole.count + 1)
        #expect(throws: LedgerError.self) {
            try whole.withUnsafeBytes { bytes in
                try AggregateLogCodec.decode(bytes, section: outside, tenant: "acme") { _, _ in }
            }
        }
    }
}
