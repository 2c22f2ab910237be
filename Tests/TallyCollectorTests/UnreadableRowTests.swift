import Foundation
import Hummingbird
import HummingbirdTesting
import TallyCLI
import TallyCore
import TallyWire
import Testing
@testable import TallyCollector
@testable import TallyLedger

/// One year-0000 event used to leave a reconciliation row `0000-06` that no reader could parse:
/// `GET /v1/reconciliation` answered 500 and `tallyctl audit` exited 1, even with `--period`.
@Suite struct UnreadableRowTests {
    static func event(at timestamp: String, id: String) throws -> UsageEvent {
        UsageEvent(
            tenant: "acme", metric: "api_calls", quantity: Quantity(1), timestamp: try EventTime(parsing: timestamp), id: id,
            properties: Properties([]))
    }

    /// An out-of-range event reaching the collector is refused with a reason and explained in
    /// reconciliation under the period of its arrival; the endpoint keeps answering.
    @Test func anOutOfRangeEventIsRefusedAndExplainedUnderItsArrivalPeriod() async throws {
        let fixture = try BillingFixture()
        let ingest = try BatchIngest(
            limits: .standard, eventLimits: EventLimits(), ledger: fixture.writer, metrics: CollectorMetrics(),
            clock: { [clock = fixture.clock] in clock.now })
        var events = [try Self.event(at: "0000-06-01T00:00:00Z", id: "ancient"), try Self.event(at: "2026-03-10T10:00:00Z", id: "ok")]
        // Any 64-bit time can come over the wire from an agent that does not validate.
        for (index, micros) in [Int64.min, Int64.max].enumerated() {
            var extreme = events[0]
            extreme.timestamp = EventTime(microseconds: micros)
            extreme.id = "extreme-\(index)"
            events.append(extreme)
        }
        let payload = try BatchPayloadEncoder(compression: .none).encode(events)
        let ack = try await ingest.process(Batch(sequence: 1, payload: payload), agent: "edge-1") { _ in true }
        #expect(ack.accepted == 1 && ack.rejected == 3)
        #expect(ack.rejections.map(\.reason) == [.invalidField, .invalidField, .invalidField])

        try await fixture.application().test(.router) { client in
            try await client.execute(uri: "/v1/reconciliation", method: .get, headers: bearer(BillingFixture.adminKey)) { response in
                #expect(response.status == .ok, "\(response.text)")
                let rows = try #require(try response.json()["rows"] as? [[String: Any]])
                #expect(rows.map { $0["period"] as? String } == ["2026-03"])
                let counts = rows.first?["counts"] as? [String: Any]
                #expect(counts?["received"] as? Int == 4 && counts?["rejected"] as? Int == 3)
                #expect((try response.json()["unreadable"] as? [Any])?.isEmpty == true)
            }
        }
        await fixture.shutdown()
    }

    /// A row written before the bound (or by hand) is reported beside the others, with its
    /// counts in the total, and `tallyctl audit` skips it instead of failing.
    @Test func aStoredRowWithAnUnreadablePeriodBreaksNoReader() async throws {
        let fixture = try BillingFixture()
        try await fixture.commit([try Self.event(at: "2026-03-10T10:00:00Z", id: "ok")])
        let legacy = try SQLiteLedgerStore(path: fixture.path)
        try legacy.database.execute(
            """
            INSERT INTO reconciliation (period, tenant, agent, received, accepted, duplicate, late, adjusted, rejected)
            VALUES ('0000-06', 'acme', 'edge-1', 1, 0, 0, 0, 0, 1)
            """)
        legacy.close()

        try await fixture.application().test(.router) { client in
            try await client.execute(uri: "/v1/reconciliation", method: .get, headers: bearer(BillingFixture.adminKey)) { response in
                #expect(response.status == .ok, "\(response.text)")
                let body = try response.json()
                let rows = try #require(body["rows"] as? [[String: Any]])
                #expect(rows.map { $0["period"] as? String } == ["2026-03"])
                let unreadable = try #require(body["unreadable"] as? [[String: Any]])
                #expect(unreadable.map { $0["period"] as? String } == ["0000-06"])
                let total = body["total"] as? [String: Any]
                #expect(total?["received"] as? Int == 2 && total?["balances"] as? Bool == true)
            }
            try await client.execute(uri: "/v1/reconciliation?period=2026-03", method: .get, headers: bearer(BillingFixture.adminKey)) {
                response in
                #expect(response.status == .ok, "\(response.text)")
            }
        }
        await fixture.shutdown()

        for arguments in [["--store", "sqlite:\(fixture.path)"], ["--store", "sqlite:\(fixture.path)", "--period", "2026-03"]] {
            // Throws (exit 1) on drift or on a row it cannot read.
            let audit = try AuditCommand.parse(arguments)
            try await audit.run()
        }
    }
}
