import Foundation
import Testing
import TallyCore
import TallyLedger

/// `tallyctl backfill`: historical lines imported as an audited unit — deduplicated against
/// the ledger, refused for the usual reasons but never as too old, a closed period's event
/// billed as an adjustment — with a summary that reconciles; a rerun writes nothing twice; a
/// revert voids what the backfill stored, and the audit stays clean throughout.
@Suite(.serialized) struct BackfillCommandTests {
    @Test func aBackfillIsImportedOnceReconciledAndRevertedAsAUnit() async throws {
        let directory = try ServiceProcess.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("ledger.db").path
        let store = "sqlite:\(path)"
        let configuration = LedgerConfiguration(groupBy: ["endpoint"])
        let now = EventTime.now()
        func event(_ id: String, _ quantity: Int64, _ time: EventTime) -> UsageEvent {
            UsageEvent(
                tenant: "acme", metric: "api_calls", quantity: Quantity(quantity), timestamp: time, id: id,
                properties: Properties([("endpoint", "/search")]))
        }
        let known = event("known", 3, now.advanced(by: .seconds(-7200)))
        let current = event("current", 5, now.advanced(by: .seconds(-3600)))
        let old = event("old", 7, now.advanced(by: .seconds(-60 * 86_400)))  // past the 35-day limit, its period closed
        let future = event("future", 1, now.advanced(by: .seconds(86_400)))
        do {
            let ledger = try SQLiteLedgerStore(path: path, configuration: configuration)
            _ = try ledger.commit(IncomingBatch(agent: "edge-1", sequence: 1, receivedAt: now, events: [.valid(known)]))
            ledger.close()
        }
        let file = directory.appendingPathComponent("gateway.ndjson").path
        let lines = [known, current, old, future].map(\.jsonLine) + ["", #"{"tenant":"acme","quantity":"lots"}"#]
        try (lines.joined(separator: "\n") + "\n").write(toFile: file, atomically: true, encoding: .utf8)

        let backfill = ["backfill", file, "--reason", "gateway logs from the outage", "--store", store, "--id", "outage-7"]
        // Read 7 bytes at a time: every line is split across reads.
        let first = try await BinaryRunner.run("tallyctl", backfill, environment: ["TALLY_BACKFILL_READ_BYTES": "7"])
        #expect(first.status == 0, "\(first.stderr)")
        #expect(first.stdoutText.contains("backfill outage-7: 5 lines from"), "\(first.stdoutText)")
        #expect(first.stdoutText.contains("accepted 1, duplicate 1, late 1 (1 billed as adjustments"), "\(first.stdoutText)")
        #expect(first.stdoutText.contains("rejected 2"))
        #expect(first.stdoutText.contains("lines = accepted + duplicate + late + rejected: yes"))
        // A rerun resumes: every batch is already committed, nothing is written twice.
        let again = try await BinaryRunner.run("tallyctl", backfill)
        #expect(again.status == 0 && again.stdoutText.contains("accepted 1, duplicate 1, late 1"), "\(again.stdoutText)\(again.stderr)")

        do {
            let ledger = try SQLiteLedgerStore(path: path, configuration: configuration)
            defer { ledger.close() }
            var stored: [String: EventStatus] = [:]
            for period in [BillingPeriod(containing: old.timestamp), BillingPeriod(containing: current.timestamp)] {
                try ledger.scanRawEvents(tenant: "acme", period: period) { (record: LedgerRecord) throws(LedgerError) in
                    stored[record.event.id ?? "?"] = record.status
                }
            }
            #expect(stored == ["known": .accepted, "current": .accepted, "old": .adjusted], "\(stored)")
            let record = try #require(try ledger.backfills().first)
            #expect(record.id == "outage-7" && record.finished && record.counts.received == 5 && record.counts.balances)
            #expect(record.reason == "gateway logs from the outage" && record.actor.hasPrefix("tallyctl:"))
            #expect(try ledger.recomputeAggregates(tenant: "acme", period: BillingPeriod(containing: old.timestamp)).differences.isEmpty)
        }
        // Without --id the id is the start of the file's SHA-256.
        let other = directory.appendingPathComponent("other.ndjson").path
        let otherText = #"{"tenant":"globex","metric":"api_calls","quantity":2,"timestamp":"\#(current.timestamp)","id":"g-1"}"# + "\n"
        try otherText.write(toFile: other, atomically: true, encoding: .utf8)
        let hashed = try await BinaryRunner.run("tallyctl", ["backfill", other, "--reason", "second file", "--store", store, "--grace", "96h"])
        let expectedID = String(SHA256Digest.hex(otherText).prefix(12))
        #expect(hashed.status == 0 && hashed.stdoutText.hasPrefix("backfill \(expectedID): 1 lines"), "\(hashed.stdoutText)\(hashed.stderr)")
        #expect(try await BinaryRunner.run("tallyctl", ["backfill", other, "--reason", "r", "--store", store, "--grace", "soon"]).status == 2)

        let list = try await BinaryRunner.run("tallyctl", ["backfill", "list", "--store", store])
        #expect(list.status == 0 && list.stdoutText.contains("outage-7\t") && list.stdoutText.contains("\tdone\t"), "\(list.stdoutText)")

        let revert = try await BinaryRunner.run("tallyctl", ["backfill", "revert", "outage-7", "--reason", "wrong file", "--store", store])
        #expect(revert.status == 0, "\(revert.stderr)")
        #expect(revert.stdoutText.hasPrefix("backfill outage-7 reverted: 2 events voided"), "\(revert.stdoutText)")
        do {
            let ledger = try SQLiteLedgerStore(path: path, configuration: configuration)
            defer { ledger.close() }
            let corrections = try ledger.corrections(CorrectionFilter(tenant: "acme"))
            #expect(Set(corrections.map(\.key)) == ["revert:outage-7/\(Fingerprint(of: current))", "revert:outage-7/\(Fingerprint(of: old))"])
            #expect(corrections.allSatisfy { $0.reason == "wrong file" && $0.quantityAfter == nil })
            // The current period is back to the one event the backfill did not bring.
            let period = BillingPeriod(containing: current.timestamp)
            let totals = try ledger.usage(
                UsageQuery(tenant: "acme", metric: "api_calls", from: period.start, to: period.end, granularity: .month, groupBy: nil))
            #expect(totals.map(\.aggregate.sum) == [Quantity(3)], "\(totals)")
            for period in Set([BillingPeriod(containing: old.timestamp), period]) {
                #expect(try ledger.recomputeAggregates(tenant: "acme", period: period).differences.isEmpty)
            }
            #expect(try ledger.backfills().first?.revertReason == "wrong file")
        }
        let reimport = try await BinaryRunner.run("tallyctl", backfill)
        #expect(reimport.status == 1 && reimport.stderr.contains("was reverted"), "\(reimport.stderr)")
        let unknown = try await BinaryRunner.run("tallyctl", ["backfill", "revert", "nope", "--reason", "r", "--store", store])
        #expect(unknown.status == 1 && unknown.stderr.contains("no backfill has the id 'nope'"))
    }
}
