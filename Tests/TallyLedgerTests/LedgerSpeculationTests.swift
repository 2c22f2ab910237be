import TallyCore
@testable import TallyLedger
import TallyTestSupport
import Testing

/// ``LedgerSpeculation``: the commit's pure steps done ahead (as the collector's preparation
/// threads do) change nothing. The same batches — fresh ones, retries through another agent
/// (all duplicates), batches mixing new and stored keys, late and too-old events, group-by and
/// unique-count cells — committed with and without the speculation leave the same outcomes,
/// aggregates, unique counts and reconciliation, on each backend.
@Suite(.offThePool) struct LedgerSpeculationTests {
    @Test(arguments: ledgerFactories)
    func speculatedCommitsLeaveTheSameLedger(_ factory: any LedgerStoreFactory) throws {
        let plain = try TestLedger(factory)
        let speculating = try TestLedger(factory)
        let speculator = try #require(speculating.store.batchSpeculator())
        let start = at("2026-04-10T00:00:00Z")
        var events = workload(count: 1_200, seed: 7, start: start, spanHours: 96)
        for index in stride(from: 0, to: events.count, by: 9) {
            events[index] = event(
                "acme", "active_users", at: events[index].timestamp.description, id: "u\(index)", [("user", "user-\(index % 13)")])
        }
        var batches: [IncomingBatch] = []
        for (number, chunk) in stride(from: 0, to: events.count, by: 100).enumerated() {
            // Arriving in April (open), early May (April closed: late, adjusted into May) and
            // mid-May (some past the late-arrival limit: too old).
            let day = number % 4
            let now = ["2026-04-2\(day)", "2026-05-0\(5 + day)", "2026-05-1\(2 + day)"][number % 3] + "T12:00:00Z"
            batches.append(batch(UInt64(number + 1), now: now, Array(events[chunk..<min(chunk + 100, events.count)])))
        }
        // A retry of a whole batch through another agent, and a batch half new, half stored.
        batches.append(batch(1, agent: "agent-2", now: "2026-04-20T12:00:00Z", batches[2].events.compactMap(\.valid)))
        let mixed = batches[3].events.compactMap(\.valid).prefix(50) + [event(id: "fresh-1"), event(id: "fresh-2")]
        batches.append(batch(2, agent: "agent-2", now: "2026-04-20T12:00:00Z", Array(mixed)))

        var speculatedPlans = 0
        for incoming in batches {
            let prepared = PreparedBatch(incoming)
            let speculated = speculator.speculate(prepared)
            if speculated.speculation != nil { speculatedPlans += 1 }
            #expect(try plain.store.commit(prepared) == speculating.store.commit(speculated), "batch \(incoming.sequence)")
        }
        #expect(speculatedPlans == batches.count)

        for april in [period("2026-04"), period("2026-05")] {
            for tenant in try plain.store.tenants(in: april) {
                for grain in AggregateGrain.allCases {
                    #expect(
                        try plain.store.storedAggregates(tenant: tenant, period: april, grain: grain)
                            == speculating.store.storedAggregates(tenant: tenant, period: april, grain: grain))
                }
                #expect(
                    try plain.store.uniqueCount(tenant: tenant, metric: "active_users", property: "user", period: april)
                        == speculating.store.uniqueCount(tenant: tenant, metric: "active_users", property: "user", period: april))
            }
        }
        let reconciliation = try plain.store.reconciliation(ReconciliationFilter())
        #expect(reconciliation.count > 10)
        #expect(reconciliation == (try speculating.store.reconciliation(ReconciliationFilter())))
        #expect(reconciliation.contains { $0.counts.duplicate > 0 })
        #expect(reconciliation.contains { $0.counts.late > 0 } && reconciliation.contains { $0.counts.rejected > 0 })
    }

    /// The log row made ahead decodes to exactly the plan's cells whichever keys turn out
    /// stored: none, one tenant's, a scattered tenth, all of a tenant (its section goes), all of
    /// them. The fold takes the writer's cells from memory, so the rows are read back only after
    /// a restart or by merging readers: this is their test. And the speculation's plan (made
    /// ahead when no key was stored) is the plan the store makes without any speculation.
    @Test func theRowMadeAheadDecodesToThePlansCellsWhicheverKeysWereStored() throws {
        let ledger = try TestLedger(SQLiteFactory())
        let configuration = ledger.configuration
        let speculator = try #require(ledger.store.batchSpeculator())
        let events = workload(count: 600, seed: 31, start: at("2026-04-10T00:00:00Z"), spanHours: 48, tenants: 5)
        let prepared = PreparedBatch(batch(1, now: "2026-04-13T00:00:00Z", events))
        // The writer takes what a speculation made ahead: one speculation per pattern.
        func speculation() throws -> LedgerSpeculation { try #require(speculator.speculate(prepared).speculation) }
        let classification = try speculation().classification
        let candidates = classification.candidates
        let tenantOf = candidates.map { classification.event($0.index)?.tenant ?? "" }
        var random = SplitMix64(seed: 3)
        let patterns: [(String, [Bool])] = [
            ("none", candidates.map { _ in false }),
            ("one tenant's first events", tenantOf.enumerated().map { $0.element == "tenant-1" && $0.offset < 200 }),
            ("a scattered tenth", candidates.map { _ in random.next() % 10 == 0 }),
            ("all of one tenant", tenantOf.map { $0 == "tenant-2" }),
            ("all", candidates.map { _ in true }),
        ]
        for (name, existing) in patterns {
            let speculation = try speculation()
            #expect(speculation.plannedIfNoneStored != nil)
            let cells = try #require(speculation.cells)
            let plan = try classification.plan(
                existing: existing, groupBy: configuration.groupBy(of:), uniqueCounts: configuration.uniquePropertiesByMetric,
                keepsMinimum: configuration.keepsMinimum(_:), levelMetrics: configuration.levelMetrics, speculated: cells)
            let row = try #require(speculation.encodedCells(existing: existing, cells: plan.cells), "\(name)")
            var decoded = AggregateCells()
            try AggregateLogCodec.decode(row, into: &decoded)
            let same = decoded.cells == plan.cells.cells
            #expect(same, "\(name): \(decoded.count) cells decoded, \(plan.cells.count) planned")
            if name == "all of one tenant" { #expect(!decoded.cells.keys.contains { $0.tenant == "tenant-2" }) }
            if name != "all" { #expect(!plan.cells.isEmpty, "\(name)") }
            let speculated = try speculation.plan(existing: existing)
            let plain = try classification.plan(
                existing: existing, groupBy: configuration.groupBy(of:), uniqueCounts: configuration.uniquePropertiesByMetric,
                keepsMinimum: configuration.keepsMinimum(_:), levelMetrics: configuration.levelMetrics)
            expectSamePlan(speculated, plain, name)
            // Taken by that plan; a commit attempted again plans in full, alike.
            #expect(speculation.plannedIfNoneStored == nil && speculation.cells == nil)
            expectSamePlan(try speculation.plan(existing: existing), plain, "\(name), planned again")
        }
    }

    /// The plan for a batch with some keys stored is the plan made ahead (none stored) with
    /// only those events moved to the duplicates — and it equals the plan made in full, for
    /// accepted, adjusted and late events, whichever of them were stored. A batch with a stored
    /// event of a unique-count metric is planned in full (nil here).
    @Test(arguments: [("2026-04-13T00:00:00Z", false), ("2026-05-05T00:00:00Z", false), ("2026-05-05T00:00:00Z", true)])
    func thePlanAdjustedForStoredKeysIsTheFullPlan(_ now: String, rejectLate: Bool) throws {
        var configuration = TestLedger.configuration
        if rejectLate { configuration.lateWindow.policy = .reject }
        let ledger = try TestLedger(SQLiteFactory(), configuration: configuration)
        let speculator = try #require(ledger.store.batchSpeculator())
        var events = workload(count: 800, seed: 57, start: at("2026-04-10T00:00:00Z"), spanHours: 60, tenants: 6)
        events += workload(count: 200, seed: 58, start: at(now).advanced(by: .seconds(-7_200)), spanHours: 1, tenants: 6)
        let prepared = PreparedBatch(batch(1, now: now, events))
        func speculation() throws -> LedgerSpeculation { try #require(speculator.speculate(prepared).speculation) }
        let made = try speculation()
        let base = try #require(made.plannedIfNoneStored)
        let speculated = try #require(made.cells)
        let classification = made.classification
        let candidates = classification.candidates
        let statuses = Set(candidates.map(\.status))
        var random = SplitMix64(seed: 5)
        let patterns: [(String, [Bool])] = [
            ("one", candidates.indices.map { $0 == candidates.count / 2 }),
            ("a scattered twentieth", candidates.map { _ in random.next() % 20 == 0 }),
            ("the first half", candidates.indices.map { $0 < candidates.count / 2 }),
            ("all", candidates.map { _ in true }),
        ]
        for (name, existing) in patterns {
            var adjusted = base
            let done = try classification.adjust(
                &adjusted, existing: existing, groupBy: configuration.groupBy(of:), uniqueCounts: configuration.uniquePropertiesByMetric,
                keepsMinimum: configuration.keepsMinimum(_:), speculated: speculated)
            #expect(done, "\(name)")
            let full = try classification.plan(
                existing: existing, groupBy: configuration.groupBy(of:), uniqueCounts: configuration.uniquePropertiesByMetric,
                keepsMinimum: configuration.keepsMinimum(_:), levelMetrics: configuration.levelMetrics)
            expectSamePlan(adjusted, full, name)
            expectSamePlan(try speculation().plan(existing: existing), full, name)
        }
        // Arriving in May, April's events are adjustments, or refused as late under `reject`.
        if now.hasPrefix("2026-05") {
            #expect(statuses.contains(rejectLate ? .late : .adjusted) && statuses.contains(.accepted), "\(statuses)")
        }

        // A stored event of a unique-count metric: planned in full.
        let users = [event("acme", "active_users", at: "2026-04-12T10:00:00Z", id: "u1", [("user", "ann")])]
        let unique = try #require(speculator.speculate(PreparedBatch(batch(2, now: now, users))).speculation)
        let uniqueBase = try #require(unique.plannedIfNoneStored)
        var adjustedUnique = uniqueBase
        let allStored = unique.classification.candidates.map { _ in true }
        let doneUnique = try unique.classification.adjust(
            &adjustedUnique, existing: allStored, groupBy: configuration.groupBy(of:),
            uniqueCounts: configuration.uniquePropertiesByMetric, keepsMinimum: configuration.keepsMinimum(_:),
            speculated: try #require(unique.cells))
        let allLate = unique.classification.candidates.allSatisfy { $0.status == .late }
        #expect(doneUnique == allLate)
        // Refused, the plan is as it was; planned in full instead.
        if !doneUnique { expectSamePlan(adjustedUnique, uniqueBase, "a unique-count event, not adjusted") }
        let plain = try unique.classification.plan(
            existing: allStored, groupBy: configuration.groupBy(of:), uniqueCounts: configuration.uniquePropertiesByMetric,
            keepsMinimum: configuration.keepsMinimum(_:), levelMetrics: configuration.levelMetrics)
        expectSamePlan(try unique.plan(existing: allStored), plain, "a unique-count event")
    }

    /// A speculation made for another configuration is not used: the store plans itself.
    @Test func aSpeculationForAnotherConfigurationIsIgnored() throws {
        let store = try TestLedger(SQLiteFactory())
        let other = try TestLedger(SQLiteFactory(), configuration: LedgerConfiguration(groupBy: ["region"]))
        let speculator = try #require(other.store.batchSpeculator())
        let incoming = batch(1, [event(id: "a", [("endpoint", "/v1/x"), ("region", "eu")])])
        _ = try store.store.commit(speculator.speculate(PreparedBatch(incoming)))
        let cells = try store.store.storedAggregates(tenant: "acme", period: period("2026-04"), grain: .hour)
        #expect(cells.keys.map(\.dimension).sorted() == ["", "endpoint"])
    }
}

/// Every part of two plans is the same: outcome, inserted rows, duplicates, reconciliation,
/// unique values and cells.
func expectSamePlan(_ plan: LedgerPlan, _ expected: LedgerPlan, _ name: String, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(plan.outcome == expected.outcome, "\(name)", sourceLocation: sourceLocation)
    #expect(plan.inserted == expected.inserted, "\(name)", sourceLocation: sourceLocation)
    #expect(plan.duplicates == expected.duplicates, "\(name)", sourceLocation: sourceLocation)
    #expect(plan.reconciliation == expected.reconciliation, "\(name)", sourceLocation: sourceLocation)
    #expect(plan.uniqueValues == expected.uniqueValues, "\(name)", sourceLocation: sourceLocation)
    #expect(plan.cells.cells == expected.cells.cells, "\(name)", sourceLocation: sourceLocation)
}

extension IncomingEvent {
    var valid: UsageEvent? {
        if case .valid(let event) = self { return event }
        return nil
    }
}
