import Foundation
import Synchronization
import Testing
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
#if canImport(Glibc)
import Glibc
import TallyTestSupport
#endif

/// 60 slow clients each sending most of an 8 MiB body once took the agent to 608 MB RSS and
/// left 363 MB held. Now bodies in flight have a memory budget (the rest get 503 at once), slow
/// bodies are cut at their deadline, and the memory goes back afterwards.
@Suite(.serialized) struct HTTPLoadTests {
    @Test func slowLargeBodiesStayWithinTheBudgetAndMemoryReturns() async throws {
        let directory = try ServiceProcess.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let config = directory.appendingPathComponent("agent.yaml")
        try """
        http:
          body_timeout: 2s
          header_timeout: 2s
          max_body_bytes_in_flight: 67108864
        """.write(to: config, atomically: true, encoding: .utf8)
        let agent = try await ServiceProcess(
            directory: directory,
            arguments: ["--config", config.path, "--spool", directory.appendingPathComponent("spool").path, "--collector", "127.0.0.1:1"],
            binary: "tally-agent", readyPattern: #"address=127\.0\.0\.1:([0-9]+)"#)
        defer { agent.kill() }
        let pid = agent.process.processIdentifier
        _ = try await metrics(agent.port)
        let baseline = try rssBytes(pid)

        let clients = 60
        let sent = Mutex(0)
        let finished = DispatchGroup()
        for _ in 0..<clients {
            finished.enter()
            DispatchQueue.global().async {
                defer { finished.leave() }
                guard let fd = try? RawConnection.open(port: agent.port) else { return }
                defer { close(fd) }
                var timeout = timeval(tv_sec: 20, tv_usec: 0)
                setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
                let head = "POST /v1/events HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-ndjson\r\nContent-Length: \(8 << 20)\r\n\r\n"
                guard sendAll(fd, Array(head.utf8)) else { return }
                let chunk = [UInt8](repeating: 0x20, count: 64 << 10)
                for _ in 0..<(7 * 16) {
                    guard sendAll(fd, chunk) else { break }
                    sent.withLock { $0 += chunk.count }
                }
                // Then stall: the agent must cut the connection (503 or the body deadline).
                var sink = [UInt8](repeating: 0, count: 4096)
                while sink.withUnsafeMutableBytes({ recv(fd, $0.baseAddress, $0.count, 0) }) > 0 {}
            }
        }
        var peak = baseline
        // The wait blocks its thread: off the pool, a sample of the RSS after each 50 ms of it.
        while await offThePool({ finished.wait(timeout: .now() + .milliseconds(50)) == .timedOut }) {
            peak = max(peak, (try? rssBytes(pid)) ?? 0)
        }
        let held = try await eventually(.seconds(20)) { try await metrics(agent.port).contains("tally_agent_http_body_bytes_in_flight 0") }
        #expect(held)
        let mib = 1 << 20
        var after = try rssBytes(pid)
        _ = try await eventually(.seconds(10)) {
            after = try rssBytes(pid)
            return after - baseline < 64 * mib
        }
        print("HTTPLoadTests: RSS baseline \(baseline / mib) MiB, peak +\((peak - baseline) / mib) MiB, after +\((after - baseline) / mib) MiB")
        // The budget (64 MiB) plus the server's own buffers and the allocator's arenas; without a
        // budget it was 600 MB, and 363 MB stayed held. (A CI run under full load once peaked at
        // +129 MiB and settled at +37 MiB against bounds of 128 and 32: the margins are wider now,
        // still far below what a missing budget or a leak shows.)
        #expect(peak - baseline < 64 * mib + 128 * mib, "peak RSS grew by \((peak - baseline) / mib) MiB")
        #expect(after - baseline < 64 * mib, "RSS stayed \((after - baseline) / mib) MiB above the start")
        #expect(sent.withLock { $0 } > 64 * mib, "the clients did not get to send much")
        let text = try await metrics(agent.port)
        #expect(text.contains(#"tally_agent_requests_refused_total{status="503"}"#))
        #expect(agent.process.isRunning)
    }

    private func metrics(_ port: Int) async throws -> String {
        let (data, _) = try await URLSession.shared.data(from: try #require(URL(string: "http://127.0.0.1:\(port)/metrics")))
        return String(decoding: data, as: UTF8.self)
    }
}

/// Sends all of `bytes` on a blocking socket; false when the peer is gone.
func sendAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
    var done = 0
    while done < bytes.count {
        let n = bytes[done...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        if n <= 0 { return false }
        done += n
    }
    return true
}

/// The resident set of a process, from /proc.
func rssBytes(_ pid: Int32) throws -> Int {
    let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
    guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
        let kib = Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
    else { throw HarnessError("no VmRSS for \(pid)") }
    return kib * 1024
}
