import Foundation
@testable import TallyAgent
import TallyCLI
import TallyConfig
import TallyCore
import TallySpool
import Testing

@Suite("Agent config, backoff and sequence lease")
struct UnitTests {
    @Test func configReadsEveryKey() throws {
        let config = try AgentConfig.load(
            yaml: """
                agent_id: edge-1
                key: s3cret
                listen: 127.0.0.1:9380
                socket: /tmp/tally.sock
                collectors: [10.0.0.1:7400, 10.0.0.2:7400]
                default_metric: api_calls
                spool: {directory: /var/spool/tally, max_bytes: 1073741824, fsync: always, full_policy: reject}
                batch: {max_events: 500, linger: 20ms}
                reconnect: {initial: 50ms, max: 10s}
                window: 4
                """)
        #expect(config.agentId == "edge-1")
        #expect(config.key == "s3cret")
        #expect(config.listen == HostPort(host: "127.0.0.1", port: 9380))
        #expect(config.collectors.map(\.host) == ["10.0.0.1", "10.0.0.2"])
        #expect(config.spool.fsync == .always)
        #expect(config.spool.fullPolicy == .rejectNew)
        #expect(config.batching.maxEvents == 500)
        #expect(config.batching.linger == .milliseconds(20))
        #expect(config.reconnect.maximum == .seconds(10))
        #expect(config.window == 4)
    }

    @Test func theDocumentedExampleLoadsWithTheDefaults() throws {
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("deploy/agent.example.yaml").path
        let config = try AgentConfig.load(file: path)
        try config.validate()
        let defaults = AgentConfig()
        #expect(config.http == defaults.http)
        #expect(config.spool == defaults.spool && config.spoolDirectory == defaults.spoolDirectory)
        #expect(config.batching == defaults.batching && config.reconnect == defaults.reconnect && config.window == defaults.window)
        #expect(config.eventLimits == defaults.eventLimits && config.maxBodyBytes == defaults.maxBodyBytes)
        #expect(config.listen == defaults.listen && config.collectors == defaults.collectors)
    }

    @Test func httpLimitsAreReadAndChecked() throws {
        let config = try AgentConfig.load(
            yaml: "http: {header_timeout: 2s, body_timeout: 3s, idle_timeout: 4s, max_connections: 9, max_body_bytes_in_flight: 16777216}\n")
        #expect(config.http.headerTimeout == .seconds(2) && config.http.bodyTimeout == .seconds(3) && config.http.idleTimeout == .seconds(4))
        #expect(config.http.maxConnections == 9 && config.http.maxBodyBytesInFlight == 16 << 20)
        let tooShort = #expect(throws: ConfigError.self) { _ = try AgentConfig.load(yaml: "http: {idle_timeout: 5ms}\n") }
        #expect(tooShort?.description.contains("http.idle_timeout") == true)
        let budget = try AgentConfig.load(yaml: "max_body_bytes: 8388608\nhttp: {max_body_bytes_in_flight: 1048576}\n")
        #expect(throws: ConfigError.self) { try budget.validate() }
    }

    @Test func configErrorsNameTheLine() {
        let error = #expect(throws: ConfigError.self) {
            _ = try AgentConfig.load(yaml: "agent_id: a\nbatchh: 3\n", file: "agent.yaml")
        }
        let text = error.map { "\($0)" } ?? ""
        #expect(text.contains("agent.yaml") && text.contains("batchh") && text.contains("2"))
    }

    @Test func flagsOverrideTheConfigFile() throws {
        let run = try AgentCommand.Run.parse(["--collector", "127.0.0.1:9400", "--agent-id", "x", "--spool", "/tmp/s"])
        let config = try run.agentConfig()
        #expect(config.collectors == [HostPort(host: "127.0.0.1", port: 9400)])
        #expect(config.agentId == "x")
        #expect(config.spoolDirectory == "/tmp/s")
        #expect(config.listen == HostPort(host: "127.0.0.1", port: 7380))
    }

    @Test func backoffDoublesWithFullJitterUpToTheCap() {
        var backoff = Backoff(initial: .milliseconds(100), maximum: .seconds(1))
        var ceilings: [Duration] = []
        for _ in 0..<6 {
            let cap = backoff.ceiling
            ceilings.append(cap)
            let delay = backoff.next()
            #expect(delay >= .zero && delay <= cap)
        }
        #expect(ceilings == [.milliseconds(100), .milliseconds(200), .milliseconds(400), .milliseconds(800), .seconds(1), .seconds(1)])
        backoff.reset()
        #expect(backoff.ceiling == .milliseconds(100))
    }
}
