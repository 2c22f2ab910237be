import Foundation
import TallyCore
import TallyLedger
import Testing

/// `tallyctl alerts`, the real binary, on a ledger holding alert records.
@Suite struct AlertsCommandTests {
    @Test func theAlertsAreListedFromTheLedger() async throws {
        let directory = try ServiceProcess.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("ledger.db").path
        let store = try SQLiteLedgerStore(path: path, configuration: LedgerConfiguration())
        let march = try #require(BillingPeriod("2026-03"))
        let delivered = AlertRecord(
            tenant: "acme", alert: "calls-1m", period: march, metric: "api_calls", kind: "quantity", threshold: "1000000",
            observed: "1000020", limit: "1000000", crossedAt: try EventTime(parsing: "2026-03-02T10:00:00Z"))
        #expect(try store.claimAlert(delivered))
        _ = try store.leaseAlert(
            identifier: delivered.identifier, now: try EventTime(parsing: "2026-03-02T10:00:00Z"),
            until: try EventTime(parsing: "2026-03-02T10:01:00Z"))
        try store.finishAlertAttempt(
            identifier: delivered.identifier, delivered: true, at: try EventTime(parsing: "2026-03-02T10:00:01Z"), error: nil,
            nextAttemptAt: try EventTime(parsing: "2026-03-02T10:00:01Z"))
        let waiting = AlertRecord(
            tenant: "globex", alert: "spend-500", period: march.next, metric: nil, kind: "amount", threshold: "500.00 USD",
            observed: "512.30 USD", limit: "500.00 USD", crossedAt: try EventTime(parsing: "2026-04-03T08:00:00Z"))
        #expect(try store.claimAlert(waiting))
        _ = try store.leaseAlert(
            identifier: waiting.identifier, now: try EventTime(parsing: "2026-04-03T08:00:00Z"), until: try EventTime(parsing: "2026-04-03T08:01:00Z")
        )
        try store.finishAlertAttempt(
            identifier: waiting.identifier, delivered: false, at: try EventTime(parsing: "2026-04-03T08:00:10Z"), error: "HTTP 503: down",
            nextAttemptAt: try EventTime(parsing: "2026-04-03T08:00:12Z"))
        store.close()

        let all = try await BinaryRunner.run("tallyctl", ["alerts", "--store", "sqlite:\(path)"])
        #expect(all.status == 0, "\(all.stderr)")
        let lines = all.stdoutText.split(separator: "\n").map(String.init)
        #expect(lines.count == 3)
        #expect(
            lines.first == "period\ttenant\talert\tmetric\tkind\tthreshold\tobserved\tcrossed_at\tstatus\tattempts\tdelivered_at\tanswer\tid")
        #expect(
            lines.dropFirst().first
                == "2026-03\tacme\tcalls-1m\tapi_calls\tquantity\t1000000\t1000020\t2026-03-02T10:00:00Z\tdelivered\t1\t2026-03-02T10:00:01Z\t\t\(delivered.identifier)"
        )
        #expect(
            lines.last
                == "2026-04\tglobex\tspend-500\t\tamount\t500.00 USD\t512.30 USD\t2026-04-03T08:00:00Z\tpending\t1\t\tHTTP 503: down\t\(waiting.identifier)"
        )

        let pending = try await BinaryRunner.run("tallyctl", ["alerts", "--store", "sqlite:\(path)", "--pending"])
        #expect(pending.status == 0 && pending.stdoutText.split(separator: "\n").count == 2 && pending.stdoutText.contains("globex"))
        let march2 = try await BinaryRunner.run("tallyctl", ["alerts", "--store", "sqlite:\(path)", "--period", "2026-03", "--tenant", "acme"])
        #expect(march2.status == 0 && march2.stdoutText.split(separator: "\n").count == 2 && march2.stdoutText.contains("calls-1m"))
        let badPeriod = try await BinaryRunner.run("tallyctl", ["alerts", "--store", "sqlite:\(path)", "--period", "March"])
        #expect(badPeriod.status == 2 && badPeriod.stderr.contains("is not a month"))
        let missing = try await BinaryRunner.run("tallyctl", ["alerts", "--store", "sqlite:\(directory.path)/none.db"])
        #expect(missing.status == 1 && missing.stderr.contains("no ledger"))
    }
}
