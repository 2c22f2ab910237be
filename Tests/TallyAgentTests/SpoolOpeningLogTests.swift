import Foundation
import Logging
import TallyAgent
import TallyConfig
import TallyCore
import TallyTestSupport
import Testing

/// What an agent says about its spool when it opens it: a new spool is "created" (information),
/// not "recovered with repairs" (a warning an on-call engineer would chase); a spool that lost its
/// checkpoint with events in it still warns; a clean reopen says neither.
@Suite struct SpoolOpeningLogTests {
    func open(_ directory: String) async throws -> (Agent, LogLines) {
        var config = AgentConfig()
        config.spoolDirectory = directory
        config.listen = HostPort(host: "127.0.0.1", port: 0)
        config.agentId = "log-agent"
        let lines = LogLines()
        let agent = try await Agent.open(config: config, logger: lines.logger())
        return (agent, lines)
    }

    @Test func aNewSpoolIsCreatedNotRepaired() async throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let (first, created) = try await open(directory)
        await first.spool.close()
        #expect(created.contains("spool created", at: .info))
        #expect(!created.contains("spool recovered with repairs"))

        let (second, reopened) = try await open(directory)
        _ = try await second.spool.append([event(1), event(2)])
        await second.spool.close()
        #expect(!reopened.contains("spool created"))
        #expect(!reopened.contains("spool recovered with repairs"))

        // Events in it and the checkpoint gone: they will be sent again, and that is a repair.
        try FileManager.default.removeItem(atPath: directory + "/checkpoint")
        let (third, repaired) = try await open(directory)
        await third.spool.close()
        #expect(repaired.contains("spool recovered with repairs", at: .warning))
        #expect(!repaired.contains("spool created"))
    }
}
