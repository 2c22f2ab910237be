import Foundation
import Testing
import TallyCore
import TallyLedger
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// An agent spools while its collector is down and is stopped; `tallyctl spool drain` then ships
/// the spool into a collector exactly once, and a second drain adds nothing.
@Suite(.serialized) struct SpoolDrainTests {
    @Test func drainShipsAStoppedAgentsSpoolExactlyOnce() async throws {
        let directory = try ServiceProcess.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let spool = directory.appendingPathComponent("spool").path
        // No collector listens on port 1: everything stays in the spool.
        let agent = try await ServiceProcess(
            directory: directory,
            arguments: ["--spool", spool, "--collector", "127.0.0.1:1", "--agent-id", "drained"],
            binary: "tally-agent", readyPattern: #"address=127\.0\.0\.1:([0-9]+)"#)
        let base = EventTime.now().advanced(by: .seconds(-300))
        var body = ""
        for index in 0..<3000 {
            let time = base.advanced(by: .milliseconds(Int64(index)))
            body += #"{"tenant":"drain","metric":"api_calls","quantity":2,"timestamp":"\#(time)","id":"d\#(index)"}"# + "\n"
        }
        var request = URLRequest(url: try #require(URL(string: "http://127.0.0.1:\(agent.port)/v1/events")))
        request.httpMethod = "POST"
        request.setValue("application/x-ndjson", forHTTPHeaderField: "Content-Type")
        let (_, response) = try await URLSession.shared.upload(for: request, from: Data(body.utf8))
        #expect((response as? HTTPURLResponse)?.statusCode == 200)
        #expect(await agent.stop() == 0)  // SIGTERM: flushes and releases the spool

        let ledger = "\(directory.path)/ledger.db"
        let collector = try await ServiceProcess(directory: directory, arguments: ["--store", "sqlite:\(ledger)"])
        defer { collector.kill() }
        let drain = ["spool", "drain", "--spool", spool, "--collector", "127.0.0.1:\(collector.port)", "--agent-id", "drained"]
        let first = try await BinaryRunner.run("tallyctl", drain)
        #expect(first.status == 0, "\(first.stdoutText)\(first.stderr)")
        #expect(try await spoolBacklog(spool) == 0)
        let second = try await BinaryRunner.run("tallyctl", drain)
        #expect(second.status == 0, "\(second.stdoutText)\(second.stderr)")
        #expect(await collector.stop() == 0)

        let store = try SQLiteLedgerStore(path: ledger)
        defer { store.close() }
        let totals = try store.periodTotals(tenant: "drain", metric: "api_calls", period: BillingPeriod(containing: base))
        #expect(totals.usage?.count == 3000)
        #expect(totals.usage?.sum == Quantity(6000))
        var counts = ReconciliationCounts()
        for row in try store.reconciliation(ReconciliationFilter(tenant: "drain")) { counts.add(row.counts) }
        #expect(counts.accepted == 3000)
        #expect(counts.received == counts.accepted + counts.duplicate)
    }
}
