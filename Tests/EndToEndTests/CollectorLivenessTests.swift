import Foundation
import Testing
import TallyCore
import TallyWire

/// The collector's side of SPEC §3 and §8, against the real process: a silent agent is pinged
/// and then disconnected; a shutdown sends every agent a goaway, still acks the batch being
/// processed and drops what comes after.
@Suite(.serialized) struct CollectorLivenessTests {
    static func startCollector(in directory: URL, limits: String = "") async throws -> ServiceProcess {
        let configURL = directory.appendingPathComponent("collector.yaml")
        try """
        agents:
          - id: edge-1
            secret: s3cret-0123456789ab
        \(limits)
        """.write(to: configURL, atomically: true, encoding: .utf8)
        return try await ServiceProcess(
            directory: directory, arguments: ["--config", configURL.path, "--store", "sqlite:\(directory.path)/ledger.db"])
    }

    @Test func aSilentAgentIsPingedThenDisconnected() async throws {
        let directory = try ServiceProcess.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let collector = try await Self.startCollector(in: directory, limits: "limits:\n  ping_after: 300ms\n  idle_timeout: 1500ms")
        defer { collector.kill() }

        // An agent that answers its pings stays connected past the idle timeout.
        let lively = try ScriptedAgent(port: collector.port)
        guard case .welcome? = try lively.handshake(agentId: "edge-1", secret: "s3cret-0123456789ab") else {
            Issue.record("no welcome")
            return
        }
        let silent = try ScriptedAgent(port: collector.port)
        _ = try silent.handshake(agentId: "edge-1", secret: "s3cret-0123456789ab")

        var pongs = 0
        let started = ContinuousClock.now
        while ContinuousClock.now - started < .seconds(3) {
            guard case .ping(let value)? = try lively.receive(timeout: .seconds(5)) else {
                Issue.record("expected a ping")
                return
            }
            try lively.send(.pong(value))
            pongs += 1
        }
        #expect(pongs >= 3)

        // The one that never answers got a ping, then a `timeout` error, and the connection was closed.
        guard case .ping? = try silent.receive(timeout: .seconds(5)) else {
            Issue.record("the silent agent was not pinged")
            return
        }
        guard case .error(let timeout)? = try silent.receive(timeout: .seconds(5)) else {
            Issue.record("the silent agent was not told why it was closed")
            return
        }
        #expect(timeout.code == WireErrorCode.timeout.rawValue)
        #expect(try silent.receive(timeout: .seconds(5)) == nil)
        // The answering one is still served: a batch gets its ack.
        let event = UsageEvent(
            tenant: "acme", metric: "api_calls", quantity: Quantity(1), timestamp: EventTime.now().advanced(by: .seconds(-5)),
            id: "alive", properties: Properties([]))
        var reply = try lively.sendBatch(sequence: 1, events: [event])
        while case .ping(let value)? = reply {
            try lively.send(.pong(value))
            reply = try lively.receive()
        }
        guard case .ack(let ack)? = reply else {
            Issue.record("expected an ack, got \(String(describing: reply))")
            return
        }
        #expect(ack.accepted == 1)
    }

    @Test func shutdownSendsGoawayToEveryAgent() async throws {
        let directory = try ServiceProcess.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let collector = try await Self.startCollector(in: directory)
        defer { collector.kill() }
        let agents = try (0..<2).map { _ in try ScriptedAgent(port: collector.port) }
        for agent in agents { _ = try agent.handshake(agentId: "edge-1", secret: "s3cret-0123456789ab") }
        let event = UsageEvent(
            tenant: "acme", metric: "api_calls", quantity: Quantity(1), timestamp: EventTime.now().advanced(by: .seconds(-5)),
            id: "before", properties: Properties([]))
        guard case .ack? = try agents[0].sendBatch(sequence: 1, events: [event]) else {
            Issue.record("no ack before the shutdown")
            return
        }
        collector.process.terminate()  // SIGTERM: graceful
        for agent in agents {
            guard case .goaway(let goaway)? = try agent.receive(timeout: .seconds(10)) else {
                Issue.record("expected a goaway")
                return
            }
            #expect(goaway.code == WireErrorCode.shuttingDown.rawValue)
            #expect(goaway.retryAfterMilliseconds > 0)
            #expect(try agent.receive(timeout: .seconds(10)) == nil)
        }
        #expect(await collector.waitForExit().status == 0)
    }
}
