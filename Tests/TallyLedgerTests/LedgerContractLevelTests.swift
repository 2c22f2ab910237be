import Foundation
import TallyCore
@testable import TallyLedger
import TallyTestSupport
import Testing

/// Levels (`weighted_sum`, issue 15) on every backend: events arrive out of order, late into a
/// closed period and twice, in shuffled batches; the level integral read from the cells of any
/// range of hours equals a plain reference over the distinct events, exactly, for what was billed
/// before the late events and for everything; the audit finds no drift.
@Suite(.offThePool) struct LedgerContractLevelTests {
    static let configuration: LedgerConfiguration = {
        var configuration = LedgerConfiguration()
        configuration.levelMetrics = ["seats"]
        return configuration
    }()

    /// The reference: the integral over `[from, to)` (nano-units × µs) of the level the events
    /// set, each from its time until the next by (timestamp, fingerprint), zero before the first.
    static func referenceIntegral(_ events: [UsageEvent], from: EventTime, to: EventTime) -> Int128 {
        let sorted = events.sorted { (($0.timestamp, Fingerprint(of: $0)) < ($1.timestamp, Fingerprint(of: $1))) }
        var total: Int128 = 0
        for (index, event) in sorted.enumerated() {
            let start = max(event.timestamp.microseconds, from.microseconds)
            let end = min(index + 1 < sorted.count ? sorted[index + 1].timestamp.microseconds : to.microseconds, to.microseconds)
            if start < end { total += event.quantity.nanos * Int128(end - start) }
        }
        return total
    }

    /// Seat counts of two tenants from April 1st to May 20th, at random instants (several in one
    /// hour, two at one instant), fractional and zero levels.
    static func seatEvents() -> [UsageEvent] {
        var random = SplitMix64(seed: 15)
        var events: [UsageEvent] = []
        let start = at("2026-04-01T00:00:00Z").microseconds
        let span = at("2026-05-20T00:00:00Z").microseconds - start
        for index in 0..<240 {
            let tenant = index % 3 == 0 ? "globex" : "acme"
            let time = start + Int64(random.next() % UInt64(span))
            let quantity = index % 17 == 0 ? "0" : "\(random.next() % 400).\(random.next() % 1000)"
            events.append(
                UsageEvent(
                    tenant: tenant, metric: "seats", quantity: try! Quantity(parsing: quantity), timestamp: EventTime(microseconds: time),
                    id: "s\(index)"))
        }
        // Two changes at one instant: ordered by fingerprint.
        events.append(event("acme", "seats", quantity: "7", at: "2026-04-14T09:30:00Z", id: "same-a"))
        events.append(event("acme", "seats", quantity: "9", at: "2026-04-14T09:30:00Z", id: "same-b"))
        return events
    }

    /// Commits `events` in shuffled batches of 16, each sent again in part as a retry.
    static func commit(
        _ events: [UsageEvent], received: String, to store: any LedgerStore, random: inout SplitMix64, sequence: inout UInt64
    )
        throws
    {
        let shuffled = events.shuffled(using: &random)
        for chunk in stride(from: 0, to: shuffled.count, by: 16) {
            let slice = Array(shuffled[chunk..<min(chunk + 16, shuffled.count)])
            sequence += 1
            let outcome = try store.commit(batch(sequence, now: received, slice))
            #expect(outcome.rejections.isEmpty && outcome.duplicate == 0, "\(outcome.rejections) \(received)")
            sequence += 1
            let retry = try store.commit(batch(sequence, agent: "agent-2", now: received, Array(slice.prefix(5))))
            #expect(retry.duplicate == min(5, slice.count))
        }
    }

    @Test(arguments: ledgerFactories)
    func levelIntegralsFromTheCellsEqualTheEventsThroughLateAndShuffledArrivals(_ factory: any LedgerStoreFactory) throws {
        let ledger = try TestLedger(factory, configuration: Self.configuration)
        let events = Self.seatEvents()
        let april = period("2026-04")
        let may = period("2026-05")
        // Arrivals: most of April on time (April 25th), the rest of April late (May
        // 5th, after April closed on May 4th: billed in May), May in two rounds.
        var random = SplitMix64(seed: 7)
        var onTime: [UsageEvent] = []
        var late: [UsageEvent] = []
        var mayLater: [UsageEvent] = []
        for event in events {
            if event.timestamp < at("2026-04-25T00:00:00Z") && random.next() % 5 != 0 {
                onTime.append(event)
            } else if event.timestamp < at("2026-05-05T00:00:00Z") {
                late.append(event)
            } else {
                mayLater.append(event)
            }
        }
        var sequence: UInt64 = 0
        try Self.commit(onTime, received: "2026-04-25T00:00:00Z", to: ledger.store, random: &random, sequence: &sequence)
        try Self.commit(late, received: "2026-05-05T00:00:00Z", to: ledger.store, random: &random, sequence: &sequence)
        try Self.commit(mayLater, received: "2026-05-20T12:00:00Z", to: ledger.store, random: &random, sequence: &sequence)
        #expect(late.contains { BillingPeriod(containing: $0.timestamp) == april && $0.timestamp >= at("2026-04-25T00:00:00Z") })

        func integral(_ tenant: String, _ hours: Range<Int64>, _ billing: BillingSelection) throws -> Int128 {
            let before = try ledger.store.billableAggregates(
                tenant: tenant, metric: "seats", hours: EventTime.acceptedRange.lowerBound.hourSinceEpoch..<hours.lowerBound, dimension: "",
                billing: billing)[""]
            let within = try ledger.store.billableAggregates(tenant: tenant, metric: "seats", hours: hours, dimension: "", billing: billing)[""]
            return try LevelIntegral.integral(
                before: before, within: within, from: EventTime(startOfHour: hours.lowerBound), to: EventTime(startOfHour: hours.upperBound))
        }
        let ranges: [(String, String)] = [
            ("2026-04-01T00:00:00Z", "2026-05-01T00:00:00Z"),  // April: one monthly cell
            ("2026-05-01T00:00:00Z", "2026-06-01T00:00:00Z"),  // May
            ("2026-04-10T13:00:00Z", "2026-05-03T07:00:00Z"),  // hours, days, hours
            ("2026-04-14T09:00:00Z", "2026-04-14T10:00:00Z"),  // the hour of the two simultaneous changes
            ("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z"),  // before any event: zero
        ]
        for tenant in ["acme", "globex"] {
            let mine = events.filter { $0.tenant == tenant }
            for (from, to) in ranges {
                let hours = at(from).hourSinceEpoch..<at(to).hourSinceEpoch
                // Everything known now.
                let everything = try integral(tenant, hours, .billedThrough(may))
                #expect(everything == Self.referenceIntegral(mine, from: at(from), to: at(to)), "\(tenant) \(from)..<\(to)")
            }
            // April as its invoice billed it (before the late events) and as corrected in May.
            let aprilHours = april.start.hourSinceEpoch..<april.end.hourSinceEpoch
            let billed = try integral(tenant, aprilHours, .billedBefore(may))
            #expect(billed == Self.referenceIntegral(onTime.filter { $0.tenant == tenant }, from: april.start, to: april.end))
            let corrected = try integral(tenant, aprilHours, .billedThrough(may))
            #expect(corrected == Self.referenceIntegral(mine, from: april.start, to: april.end))
            #expect(billed != corrected, "the late events change April's integral")
        }
        for checked in [april, may, period("2026-03")] {
            let drift = try ledger.store.recomputeAggregates(tenant: nil, period: checked)
            #expect(drift.differences.isEmpty, "\(checked): \(drift.differences.prefix(3))")
        }
        // A reopened store (SQLite folds its log on close) answers the same.
        try ledger.reopen()
        let hours = april.start.hourSinceEpoch..<may.end.hourSinceEpoch
        #expect(
            try integral("acme", hours, .billedThrough(may))
                == Self.referenceIntegral(events.filter { $0.tenant == "acme" }, from: april.start, to: may.end))
    }

    /// A wrong level change is drift: the audit recomputes each hour's changes from the raw events.
    @Test func theAuditFindsAWrongLevelChange() throws {
        let ledger = try TestLedger(SQLiteFactory(), configuration: Self.configuration)
        _ = try ledger.store.commit(
            batch(
                1,
                [
                    event("acme", "seats", quantity: "5", at: "2026-04-13T10:00:00Z"),
                    event("acme", "seats", quantity: "8", at: "2026-04-13T11:00:00Z"),
                ]
            ))
        #expect(try ledger.store.recomputeAggregates(tenant: "acme", period: period("2026-04")).differences.isEmpty)
        let store = try #require(ledger.store as? SQLiteLedgerStore)
        try store.flushAggregates()
        try store.database.execute(
            "UPDATE usage_hourly SET level_delta = '4' WHERE tenant = 'acme' AND metric = 'seats' AND hour = \(at("2026-04-13T10:00:00Z").hourSinceEpoch)"
        )
        let drift = try ledger.store.recomputeAggregates(tenant: "acme", period: period("2026-04"))
        #expect(drift.differences.count == 1 && drift.differences.first?.grain == .hour)
        #expect(drift.differences.first?.recomputed?.levelDelta == Quantity(5) && drift.differences.first?.stored?.levelDelta == Quantity(4))
    }

    /// Corrections cannot take a level event out: its level holds until the next event.
    @Test(arguments: ledgerFactories)
    func aLevelEventIsNotCorrectedOneByOne(_ factory: any LedgerStoreFactory) throws {
        let ledger = try TestLedger(factory, configuration: Self.configuration)
        let seats = event("acme", "seats", quantity: "5", at: "2026-04-13T10:00:00Z")
        _ = try ledger.store.commit(batch(1, [seats]))
        let request = CorrectionRequest(
            key: "k1", tenant: "acme", timestamp: seats.timestamp, fingerprint: Fingerprint(of: seats), action: .void, reason: "test",
            actor: "admin:test")
        // The level stays: refused with the reason, nothing applied.
        #expect(throws: LedgerError.self) { try ledger.store.applyCorrections([request], now: at("2026-04-13T12:00:00Z")) }
    }
}
