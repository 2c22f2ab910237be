import Foundation
import TallyAgent
import TallyClient
import Testing

/// The spool's filesystem on `/metrics`, which the alert TallyAgentSpoolDiskNearlyFull reads
/// (deploy/monitoring/tally-alerts.yaml): read at each scrape, from the spool's own directory.
@Suite struct SpoolFilesystemMetricsTests {
    static func value(_ name: String, in exposition: String) -> Double? {
        exposition.split(separator: "\n").first { $0.hasPrefix(name + " ") }.flatMap { Double($0.dropFirst(name.count + 1)) }
    }

    @Test func theSpoolsFilesystemIsOnMetrics() async throws {
        let agent = try await TestAgent.start()
        let exchange = HTTPExchange(host: "127.0.0.1", port: agent.port)
        let metrics = try await exchange.request(method: "GET", path: "/metrics")
        await agent.stop()
        #expect(metrics.status == 200)
        let available = try #require(Self.value("tally_agent_spool_filesystem_avail_bytes", in: metrics.text), "\(metrics.text)")
        let size = try #require(Self.value("tally_agent_spool_filesystem_size_bytes", in: metrics.text))
        // The same filesystem's size through Foundation (statfs of the spool's directory).
        let attributes = try FileManager.default.attributesOfFileSystem(forPath: agent.agent.spool.directory)
        let expectedSize = try #require((attributes[.systemSize] as? NSNumber)?.doubleValue)
        #expect(size == expectedSize)
        #expect(available > 0 && available <= size)
    }
}
