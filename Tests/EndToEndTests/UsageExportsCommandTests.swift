import Foundation
import TallyCore
import TallyLedger
import Testing

/// `tallyctl usage exports`, the real binary, on a ledger holding export records.
@Suite struct UsageExportsCommandTests {
    @Test func theExportRecordsAreListedFromTheLedger() async throws {
        let directory = try ServiceProcess.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("ledger.db").path
        let store = try SQLiteLedgerStore(path: path, configuration: LedgerConfiguration())
        let hour = try EventTime(parsing: "2026-03-02T09:00:00Z").hourSinceEpoch
        try store.saveExportRecord(
            ExportRecord(
                identifier: "tally-acme-api_calls-2026-03-02T09:00:00Z-r1", tenant: "acme", metric: "api_calls", hour: hour,
                value: Quantity(12), status: .sent, attempts: 2, sentAt: try EventTime(parsing: "2026-03-02T10:00:01Z"),
                attemptedAt: try EventTime(parsing: "2026-03-02T10:00:01Z")))
        try store.saveExportRecord(
            ExportRecord(
                identifier: "tally-globex-api_calls-2026-03-02T09:00:00Z-r1", tenant: "globex", metric: "api_calls", hour: hour,
                value: Quantity(3), status: .pending, attempts: 5, lastError: "HTTP 503: down",
                attemptedAt: try EventTime(parsing: "2026-03-02T10:00:02Z")))
        store.close()

        let all = try await BinaryRunner.run("tallyctl", ["usage", "exports", "--store", "sqlite:\(path)"])
        #expect(all.status == 0, "\(all.stderr)")
        let lines = all.stdoutText.split(separator: "\n").map(String.init)
        #expect(lines.count == 3)
        #expect(lines.first == "identifier\ttenant\tmetric\thour\tvalue\tstatus\tattempts\tattempted_at\tsent_at\tanswer")
        #expect(
            lines.dropFirst().first
                == "tally-acme-api_calls-2026-03-02T09:00:00Z-r1\tacme\tapi_calls\t2026-03-02T09:00:00Z\t12\tsent\t2\t2026-03-02T10:00:01Z\t2026-03-02T10:00:01Z\t"
        )
        #expect(lines.last?.hasSuffix("\t3\tpending\t5\t2026-03-02T10:00:02Z\t\tHTTP 503: down") == true)

        let one = try await BinaryRunner.run("tallyctl", ["usage", "exports", "--store", "sqlite:\(path)", "--tenant", "globex"])
        #expect(one.status == 0 && one.stdoutText.split(separator: "\n").count == 2 && one.stdoutText.contains("globex"))

        let missing = try await BinaryRunner.run("tallyctl", ["usage", "exports", "--store", "sqlite:\(directory.path)/none.db"])
        #expect(missing.status == 1 && missing.stderr.contains("no ledger"))
        let bad = try await BinaryRunner.run("tallyctl", ["usage", "exports", "--store", "mysql://x"])
        #expect(bad.status == 2)
    }
}
