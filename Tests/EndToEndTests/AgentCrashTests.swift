import Foundation
import Synchronization
import Testing
import TallyCore
import TallyLedger
#if canImport(FoundationNetworking)
import FoundationNetworking
import TallyTestSupport
#endif

/// A real agent killed with SIGKILL in the middle of a stream of requests, then restarted on the
/// same spool: every event it answered 2xx for reaches the collector exactly once.
@Suite(.serialized) struct AgentCrashTests {
    static func body(_ request: Int, _ base: EventTime, tenant: String = "crash") -> (Data, [String]) {
        var ids: [String] = []
        var text = ""
        for index in 0..<100 {
            let id = "\(tenant)-\(request)-\(index)"
            ids.append(id)
            let time = base.advanced(by: .milliseconds(Int64(request * 100 + index)))
            text += #"{"tenant":"\#(tenant)","metric":"api_calls","quantity":1,"timestamp":"\#(time)","id":"\#(id)"}"# + "\n"
        }
        return (Data(text.utf8), ids)
    }

    @Test(arguments: [5, 25])
    func everyAcknowledgedEventArrivesOnceAfterAKill(killAfter: Int) async throws {
        let directory = try ServiceProcess.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let ledger = "\(directory.path)/ledger.db"
        let collector = try await ServiceProcess(directory: directory, arguments: ["--store", "sqlite:\(ledger)"])
        defer { collector.kill() }
        let spool = directory.appendingPathComponent("spool").path
        let agentArguments = ["--spool", spool, "--collector", "127.0.0.1:\(collector.port)", "--agent-id", "crash-test"]
        let pattern = #"address=127\.0\.0\.1:([0-9]+)"#
        let agent = try await ServiceProcess(directory: directory, arguments: agentArguments, binary: "tally-agent", readyPattern: pattern)
        let base = EventTime.now().advanced(by: .seconds(-120))
        let progress = Progress()
        let url = try #require(URL(string: "http://127.0.0.1:\(agent.port)/v1/events"))

        // Four concurrent writers; the agent is killed once `killAfter` requests were answered,
        // with others in flight.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for writer in 0..<4 {
                group.addTask {
                    for round in 0..<20 {
                        let (data, ids) = Self.body(writer * 1000 + round, base)
                        var request = URLRequest(url: url)
                        request.httpMethod = "POST"
                        request.setValue("application/x-ndjson", forHTTPHeaderField: "Content-Type")
                        guard let (_, response) = try? await URLSession.shared.upload(for: request, from: data) else { return }
                        if (response as? HTTPURLResponse)?.statusCode == 200 {
                            progress.acknowledged.withLock { $0 += ids }
                        }
                        let count = progress.answered.withLock { value -> Int in
                            value += 1
                            return value
                        }
                        if count == killAfter { agent.kill() }
                    }
                }
            }
            try await group.waitForAll()
        }
        agent.kill()
        let acked = progress.acknowledged.withLock { $0 }
        #expect(acked.count >= killAfter * 100 - 300)

        // Restarted on the same spool, it recovers and ships the backlog.
        let restarted = try await ServiceProcess(
            directory: directory, arguments: agentArguments, binary: "tally-agent", readyPattern: pattern)
        defer { restarted.kill() }
        #expect(try await eventually(.seconds(120)) { try await spoolBacklog(spool) == 0 })
        restarted.kill()
        #expect(await collector.stop() == 0)

        let store = try SQLiteLedgerStore(path: ledger)
        defer { store.close() }
        var stored: [String: Int] = [:]
        try store.scanRawEvents(tenant: "crash", period: BillingPeriod(containing: base)) { record in
            stored[record.event.id ?? "", default: 0] += 1
        }
        let missing = acked.filter { stored[$0] == nil }
        #expect(missing.isEmpty, "\(missing.count) acknowledged events are missing, e.g. \(missing.prefix(3))")
        #expect(stored.values.allSatisfy { $0 == 1 })
    }
}

/// What the writers saw, shared between their tasks.
final class Progress: Sendable {
    let acknowledged = Mutex<[String]>([])
    let answered = Mutex(0)
}
