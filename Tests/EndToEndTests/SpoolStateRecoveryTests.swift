import Foundation
import TallyCore
import TallyLedger
import Testing
#if canImport(FoundationNetworking)
import FoundationNetworking
import TallyTestSupport
#endif

/// A deleted `shipper.seq` once made the restarted agent reuse sequence 1, which the collector
/// refuses (`sequence_reused`), and shipping stalled for the 5 minutes of a fatal error. Now the
/// agent continues from a sequence that cannot have been used, and ships at once.
@Suite(.serialized) struct SpoolStateRecoveryTests {
    @Test func aDeletedSequenceFileDoesNotStallShipping() async throws {
        let directory = try ServiceProcess.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let ledger = "\(directory.path)/ledger.db"
        let collector = try await ServiceProcess(directory: directory, arguments: ["--store", "sqlite:\(ledger)"])
        defer { collector.kill() }
        let spool = directory.appendingPathComponent("spool").path
        let arguments = ["--spool", spool, "--collector", "127.0.0.1:\(collector.port)", "--agent-id", "seq-test"]
        let ready = #"address=127\.0\.0\.1:([0-9]+)"#
        let base = EventTime.now().advanced(by: .seconds(-300))

        func send(_ port: Int, _ range: Range<Int>) async throws {
            let body = range.map {
                #"{"tenant":"seq","metric":"api_calls","quantity":1,"timestamp":"\#(base.advanced(by: .milliseconds(Int64($0))))","id":"s\#($0)"}"#
            }
            .joined(separator: "\n")
            var request = URLRequest(url: try #require(URL(string: "http://127.0.0.1:\(port)/v1/events")))
            request.httpMethod = "POST"
            request.setValue("application/x-ndjson", forHTTPHeaderField: "Content-Type")
            let (_, response) = try await URLSession.shared.upload(for: request, from: Data(body.utf8))
            #expect((response as? HTTPURLResponse)?.statusCode == 200)
        }
        func drained() async throws -> Bool {
            try await eventually(.seconds(30)) { try await spoolBacklog(spool) == 0 }
        }

        let first = try await ServiceProcess(directory: directory, arguments: arguments, binary: "tally-agent", readyPattern: ready)
        try await send(first.port, 0..<100)
        #expect(try await drained())
        #expect(await first.stop() == 0)
        try FileManager.default.removeItem(atPath: spool + "/shipper.seq")

        let second = try await ServiceProcess(directory: directory, arguments: arguments, binary: "tally-agent", readyPattern: ready)
        defer { second.kill() }
        try await send(second.port, 100..<200)
        #expect(try await drained(), "shipping stalled: \(second.logText.suffix(2000))")
        #expect(second.logText.contains("time-based sequence"))
        #expect(!second.logText.contains("sequence_reused"))
        #expect(await second.stop() == 0)
        #expect(await collector.stop() == 0)

        let store = try SQLiteLedgerStore(path: ledger)
        defer { store.close() }
        var stored = 0
        try store.scanRawEvents(tenant: "seq", period: BillingPeriod(containing: base)) { _ in stored += 1 }
        #expect(stored == 200)
    }
}
