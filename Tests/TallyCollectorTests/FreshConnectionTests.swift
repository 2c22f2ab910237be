import Foundation
import Synchronization
import TallyClient
import TallyConfig
import TallyCore
import TallyTestSupport
import Testing

@testable import TallyCollector

/// Tally's HTTP client (`HTTPExchange`: tallyctl, exports, webhooks, TallyClient) against a
/// collector that answers a read on its event loop as soon as the request's head arrives, and
/// closes (`Connection: close`), while three threads keep the two cores busy. Every request gets its
/// answer. Before the client wrote a request in one piece, a tenth of these failed "closed the
/// connection before the answer was complete: I/O on closed channel": the server had answered
/// and closed before the client, slowed by the load, wrote the end of its request.
@Suite struct FreshConnectionTests {
    @Test func everyRequestIsAnsweredWhileTheCPUIsBusy() async throws {
        var config = CollectorConfig()
        config.store = "sqlite:" + NSTemporaryDirectory() + "/tally-fresh-\(UUID().uuidString).db"
        config.listen = HostPort(host: "127.0.0.1", port: 0)
        config.http = HostPort(host: "127.0.0.1", port: 0)
        config.adminKey = "admin-key-for-fresh-connections"
        let (running, port) = try await startCollectorServingHTTP(config)

        let busy = Atomic(true)
        for _ in 0..<3 {
            Thread { while busy.load(ordering: .relaxed) {} }.start()
        }
        var failures: [String] = []
        for round in 0..<600 {
            do {
                let answer = try await HTTPExchange(host: "127.0.0.1", port: port).request(
                    method: "GET", path: "/v1/usage?tenant=acme&metric=api_calls",
                    headers: [("Authorization", "Bearer admin-key-for-fresh-connections")])
                if answer.status != 200 { failures.append("\(round): \(answer.status) \(answer.text)") }
            } catch {
                failures.append("\(round): \(error)")
            }
        }
        busy.store(false, ordering: .relaxed)
        #expect(failures.isEmpty, "\(failures.count) of 600 failed, first: \(failures.prefix(3))")
        running.cancel()
        _ = await running.result
    }
}
