import Foundation
import TallyCore
import TallyLedger
import Testing
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
#if canImport(Glibc)
import Glibc
import TallyTestSupport
#endif

/// The agent on a real, small, full file system (a tmpfs the test mounts; it needs root, as CI
/// runs; the same rules through the file-operations seam are in `TallySpoolTests`): it never
/// exits, answers 503 with Retry-After while it cannot keep events, says so in /healthz and a
/// metric, starts while the disk is full, ships and frees what was acknowledged, and loses
/// nothing it answered 200 for.
@Suite(.serialized, .enabled(if: getuid() == 0, "mounts a tmpfs, which needs root (CI runs the tests as root)"))
struct DiskFullTests {
    @Test func theAgentRidesOutAFullDisk() async throws {
        let directory = try ServiceProcess.temporaryDirectory()
        let disk = directory.appendingPathComponent("disk")
        try FileManager.default.createDirectory(at: disk, withIntermediateDirectories: true)
        let mounted = try BinaryRunner.runSystem("/usr/bin/mount", ["-t", "tmpfs", "-o", "size=1m,mode=0777", "tally-test", disk.path])
        try #require(mounted.status == 0, "mount: \(mounted.stderr)")
        defer {
            _ = try? BinaryRunner.runSystem("/usr/bin/umount", ["-l", disk.path])
            try? FileManager.default.removeItem(at: directory)
        }
        let spool = disk.appendingPathComponent("spool").path
        let ledger = "\(directory.path)/ledger.db"
        let collectorPort = try freePort()
        let config = directory.appendingPathComponent("agent.yaml")
        try """
        spool:
          directory: \(spool)
          retry_after: 1s
        reconnect:
          initial: 50ms
          max: 500ms
        """.write(to: config, atomically: true, encoding: .utf8)
        let agentArguments = [
            "--config", config.path, "--collector", "127.0.0.1:\(collectorPort)", "--agent-id", "disk-full", "--default-metric", "api_calls",
        ]
        let agentReady = #"address=127\.0\.0\.1:([0-9]+)"#
        var collector = try await ServiceProcess(
            directory: directory, arguments: ["--store", "sqlite:\(ledger)", "--listen", "127.0.0.1:\(collectorPort)"])
        var agent = try await ServiceProcess(directory: directory, arguments: agentArguments, binary: "tally-agent", readyPattern: agentReady)
        defer {
            agent.kill()
            collector.kill()
        }
        let base = EventTime.now().advanced(by: .seconds(-600))
        var accepted = Set<String>()
        var next = 0
        /// Posts 100 events; returns the status, and remembers the ids of a 200.
        func post(_ port: Int) async throws -> (status: Int, retryAfter: String?) {
            let ids = (next..<(next + 100)).map { "e\($0)" }
            next += 100
            let body = ids.enumerated().map { offset, id in
                #"{"tenant":"disk","metric":"api_calls","quantity":1,"timestamp":"\#(base.advanced(by: .milliseconds(Int64(next + offset))))","id":"\#(id)","properties":{"pad":"\#(String(repeating: "x", count: 100))"}}"#
            }.joined(separator: "\n")
            var request = URLRequest(url: try #require(URL(string: "http://127.0.0.1:\(port)/v1/events")))
            request.httpMethod = "POST"
            request.setValue("application/x-ndjson", forHTTPHeaderField: "Content-Type")
            let (_, response) = try await URLSession.shared.upload(for: request, from: Data(body.utf8))
            let http = response as? HTTPURLResponse
            if http?.statusCode == 200 { accepted.formUnion(ids) }
            return (http?.statusCode ?? 0, http?.value(forHTTPHeaderField: "Retry-After"))
        }

        // 1. Three times the disk's size through it: acknowledged data must be freed (also in
        //    the active segment, which is far larger than this disk), and the agent never exits.
        let deadline = ContinuousClock.now + .seconds(180)
        var refusals = 0
        while accepted.count * 230 < 3 << 20, ContinuousClock.now < deadline {
            let answer = try await post(agent.port)
            #expect(agent.process.isRunning, "the agent exited: \(agent.logText.suffix(2000))")
            if answer.status == 503 {
                #expect(answer.retryAfter != nil)
                refusals += 1
                try await Task.sleep(for: .milliseconds(50))
            } else {
                #expect(answer.status == 200)
            }
        }
        let spoolNow = try await BinaryRunner.run("tallyctl", ["spool", "status", "--spool", spool])
        #expect(
            accepted.count * 230 >= 3 << 20,
            "only \(accepted.count) events were taken, \(refusals) refusals: \(spoolNow.stdoutText) \(agent.logText.suffix(3000))")

        // 2. No collector, events waiting in the spool, and the disk full to the last byte:
        //    503, and health and metrics say so. (Everything shipped first: the acknowledged
        //    active segment is what makes room for the events that wait.)
        #expect(try await eventually(.seconds(60)) { try await spoolBacklog(spool) == 0 })
        collector.kill()
        let waiting = try await eventually(.seconds(20)) { try await post(agent.port).status == 200 }
        #expect(waiting)
        let filler = disk.appendingPathComponent("filler").path
        fill(filler)
        let refused = try await post(agent.port)
        #expect(refused.status == 503 && refused.retryAfter != nil)
        let (healthStatus, health) = try await get(agent.port, "/healthz")
        #expect(healthStatus == 503 && health.contains("not writable"), "\(health)")
        let (_, metrics) = try await get(agent.port, "/metrics")
        #expect(metrics.contains("tally_agent_spool_write_failing 1"), "\(metrics)")
        #expect(agent.process.isRunning)

        // 3. A restart on the full disk starts, and ships the backlog once a collector is back.
        #expect(await agent.stop() == 0)
        agent = try await ServiceProcess(directory: directory, arguments: agentArguments, binary: "tally-agent", readyPattern: agentReady)
        collector = try await ServiceProcess(
            directory: directory, arguments: ["--store", "sqlite:\(ledger)", "--listen", "127.0.0.1:\(collectorPort)"])
        let drained = try await eventually(.seconds(60)) { try await spoolBacklog(spool) == 0 }
        #expect(drained, "\(agent.logText.suffix(2000))")
        #expect(agent.process.isRunning)

        // 4. Space again: events are taken and shipped as before.
        try FileManager.default.removeItem(atPath: filler)
        let resumed = try await eventually(.seconds(20)) { try await post(agent.port).status == 200 }
        #expect(resumed)
        let shipped = try await eventually(.seconds(60)) { try await spoolBacklog(spool) == 0 }
        #expect(shipped)
        #expect(await agent.stop() == 0)
        #expect(await collector.stop() == 0)

        // Every event answered 200 is in the ledger, once.
        let store = try SQLiteLedgerStore(path: ledger)
        defer { store.close() }
        var stored: [String: Int] = [:]
        try store.scanRawEvents(tenant: "disk", period: BillingPeriod(containing: base)) { record in
            stored[record.event.id ?? "", default: 0] += 1
        }
        let missing = accepted.filter { stored[$0] == nil }
        #expect(missing.isEmpty, "\(missing.count) acknowledged events are missing")
        #expect(stored.values.allSatisfy { $0 == 1 })
    }

    /// Writes to `path` until the file system refuses.
    private func fill(_ path: String) {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { return }
        defer { close(fd) }
        let chunk = [UInt8](repeating: 0xAB, count: 4096)
        while chunk.withUnsafeBytes({ write(fd, $0.baseAddress, $0.count) }) > 0 {}
        let one: [UInt8] = [0]
        while one.withUnsafeBytes({ write(fd, $0.baseAddress, 1) }) > 0 {}
        fsync(fd)
    }

    private func get(_ port: Int, _ path: String) async throws -> (Int, String) {
        let url = try #require(URL(string: "http://127.0.0.1:\(port)\(path)"))
        let (data, response) = try await URLSession.shared.data(from: url)
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: data, as: UTF8.self))
    }
}
