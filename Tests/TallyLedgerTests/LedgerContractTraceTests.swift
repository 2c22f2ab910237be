import TallyCore
@testable import TallyLedger
import Testing

/// ``LedgerStore/traceRecords(_:)`` on every backend: an event found by id or fingerprint with
/// its first arrival and every later copy, a late event with the period it is billed in, a
/// too-old and an invalid event among the refusals, other tenants' events and other time
/// ranges left out, and nothing for an id never sent.
@Suite struct LedgerContractTraceTests {
    static let april = at("2026-04-01T00:00:00Z")..<at("2026-05-01T00:00:00Z")

    static let call = event(quantity: "2", at: "2026-04-13T10:00:00Z", id: "req-1", [("endpoint", "/a")])
    static let bytes = event("acme", "bytes_out", quantity: "700", at: "2026-04-13T10:00:00Z", id: "req-1", [("endpoint", "/a")])
    static let otherTenant = event("globex", quantity: "9", at: "2026-04-13T10:00:00Z", id: "req-1", [("endpoint", "/a")])
    static let late = event(quantity: "5", at: "2026-03-20T08:00:00Z", id: "late-1", [("endpoint", "/b")])
    static let old = event(quantity: "1", at: "2026-02-01T00:00:00Z", id: "old-1")
    static let noID = event(quantity: "3", at: "2026-04-13T11:00:00Z", [("endpoint", "/c")])

    /// Commits the story: batch 1 from agent-1, a retry of one event from agent-2, an invalid event.
    func written(_ factory: any LedgerStoreFactory) throws -> TestLedger {
        let ledger = try TestLedger(factory)
        _ = try ledger.store.commit(batch(1, [Self.call, Self.bytes, Self.otherTenant, Self.late, Self.old, Self.noID]))
        _ = try ledger.store.commit(batch(1, agent: "agent-2", now: "2026-04-13T14:00:00Z", [Self.noID, Self.call]))
        var invalid = batch(2, now: "2026-04-13T15:00:00Z", [])
        invalid.events.append(
            .invalid(
                InvalidEvent(
                    EventRejection(.invalidField, field: "quantity", "quantity must be an exact decimal"), tenant: "acme", metric: "api_calls",
                    timestamp: at("2026-04-13T12:00:00Z"), id: "bad-1", source: "{\"quantity\":\"x\"}")))
        _ = try ledger.store.commit(invalid)
        return ledger
    }

    @Test(arguments: ledgerFactories)
    func anEventByIDWithItsCopies(_ factory: any LedgerStoreFactory) throws {
        let ledger = try written(factory)
        let records = try ledger.store.traceRecords(TraceQuery(tenant: "acme", key: .id("req-1"), times: Self.april))
        // Two events carry the id (one per metric); the other tenant's is not acme's.
        #expect(records.events.map(\.event) == [Self.call, Self.bytes].sorted { Fingerprint(of: $0) < Fingerprint(of: $1) })
        let callRecord = try #require(records.events.first { $0.event == Self.call })
        #expect(callRecord.status == .accepted && callRecord.billedIn == nil)
        #expect(callRecord.agent == "agent-1" && callRecord.batchSequence == 1 && callRecord.batchIndex == 0)
        #expect(callRecord.receivedAt == at("2026-04-13T13:00:00Z"))
        #expect(callRecord.fingerprint == Fingerprint(of: Self.call))
        // The retry through agent-2 (index 1 of its batch) is the only copy.
        #expect(
            records.duplicates == [
                TraceArrival(
                    agent: "agent-2", batchSequence: 1, batchIndex: 1, receivedAt: at("2026-04-13T14:00:00Z"), timestamp: Self.call.timestamp,
                    fingerprint: Fingerprint(of: Self.call), quantity: Self.call.quantity)
            ])
        #expect(records.refusals.isEmpty)

        let globex = try ledger.store.traceRecords(TraceQuery(tenant: "globex", key: .id("req-1"), times: Self.april))
        #expect(globex.events.map(\.event) == [Self.otherTenant] && globex.duplicates.isEmpty)
        // Outside the searched times nothing is found.
        let march = at("2026-03-01T00:00:00Z")..<at("2026-04-01T00:00:00Z")
        #expect(try ledger.store.traceRecords(TraceQuery(tenant: "acme", key: .id("req-1"), times: march)).events.isEmpty)
    }

    @Test(arguments: ledgerFactories)
    func byFingerprintLateTooOldAndInvalid(_ factory: any LedgerStoreFactory) throws {
        let ledger = try written(factory)
        // An event without an id is found by its fingerprint, with its copy.
        let print = Fingerprint(of: Self.noID)
        let noID = try ledger.store.traceRecords(TraceQuery(tenant: "acme", key: .fingerprint(print), times: Self.april))
        #expect(noID.events.map(\.event) == [Self.noID])
        #expect(noID.duplicates.map { "\($0.agent)/\($0.batchSequence)/\($0.batchIndex)" } == ["agent-2/1/0"])

        let late = try ledger.store.traceRecords(
            TraceQuery(tenant: "acme", key: .id("late-1"), times: at("2026-03-01T00:00:00Z")..<at("2026-05-01T00:00:00Z")))
        #expect(late.events.count == 1)
        #expect(late.events.first?.status == .adjusted && late.events.first?.billedIn == period("2026-04"))

        // Refused events are found whatever the searched times.
        let old = try ledger.store.traceRecords(TraceQuery(tenant: "acme", key: .id("old-1"), times: Self.april))
        #expect(old.events.isEmpty)
        let tooOld = try #require(old.refusals.first)
        #expect(old.refusals.count == 1 && tooOld.reason == .tooOld && tooOld.fingerprint == Fingerprint(of: Self.old))
        #expect(tooOld.agent == "agent-1" && tooOld.batchSequence == 1 && tooOld.batchIndex == 4 && tooOld.quantity == Self.old.quantity)
        #expect(tooOld.id == "old-1" && tooOld.timestamp == Self.old.timestamp)
        let byPrint = try ledger.store.traceRecords(TraceQuery(tenant: "acme", key: .fingerprint(Fingerprint(of: Self.old)), times: Self.april))
        #expect(byPrint.refusals.map(\.reason) == [.tooOld])

        let bad = try ledger.store.traceRecords(TraceQuery(tenant: "acme", key: .id("bad-1"), times: Self.april))
        let invalid = try #require(bad.refusals.first)
        #expect(bad.refusals.count == 1 && bad.events.isEmpty)
        #expect(invalid.reason == .invalidField && invalid.field == "quantity" && invalid.message == "quantity must be an exact decimal")
        #expect(invalid.batchSequence == 2 && invalid.receivedAt == at("2026-04-13T15:00:00Z") && invalid.fingerprint == nil)

        let never = try ledger.store.traceRecords(TraceQuery(tenant: "acme", key: .id("never-sent"), times: Self.april))
        #expect(never == TraceRecords())
    }
}
