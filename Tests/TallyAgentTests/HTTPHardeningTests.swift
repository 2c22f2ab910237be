import Foundation
@testable import TallyAgent
import TallyCore
import Testing
import TallyTestSupport

/// The agent's HTTP server against hostile or careless local clients (issue 9, items 7, 8, 10):
/// only JSON media types, deadlines for every phase of a request, a connection cap, a memory
/// budget for bodies in flight, and an answer for a client that half-closes.
@Suite("HTTP hardening")
struct HTTPHardeningTests {
    private func post(_ port: Int, body: String, contentType: String?) async throws -> String {
        let socket = try BlockingHTTPSocket(port: port)
        defer { socket.close() }
        var head = "POST /v1/events HTTP/1.1\r\nHost: localhost\r\nContent-Length: \(body.utf8.count)\r\n"
        if let contentType { head += "Content-Type: \(contentType)\r\n" }
        try socket.send(head + "\r\n" + body)
        return try await socket.readHeadOffThePool()
    }

    /// A web page can POST `text/plain`, form data or an untyped body cross-site without asking
    /// first; none of them may become usage.
    @Test func onlyJSONMediaTypesAreAccepted() async throws {
        let agent = try await TestAgent.start()
        let body = event(1).jsonLine
        for refused in [nil, "text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"] {
            let answer = try await post(agent.port, body: body, contentType: refused)
            #expect(answer.hasPrefix("HTTP/1.1 415"), "\(refused ?? "none"): \(answer)")
        }
        #expect(try await agent.agent.spool.stats().events == 0)
        for accepted in ["application/json", "application/json; charset=utf-8", "Application/X-NDJSON"] {
            let answer = try await post(agent.port, body: body, contentType: accepted)
            #expect(answer.hasPrefix("HTTP/1.1 200"), "\(accepted): \(answer)")
        }
        #expect(try await agent.agent.spool.stats().events == 3)  // the agent keeps retries; the collector dedupes
        #expect(String(decoding: agent.agent.metrics.exposition(), as: UTF8.self).contains(#"tally_agent_requests_refused_total{status="415"} 5"#))
        await agent.stop()
    }

    /// A client that sends its request and then half-closes still gets the answer.
    @Test func aHalfClosedClientGetsItsAnswer() async throws {
        let agent = try await TestAgent.start()
        let socket = try BlockingHTTPSocket(port: agent.port)
        let body = (0..<3).map { event($0).jsonLine }.joined(separator: "\n")
        try socket.send(
            "POST /v1/events HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-ndjson\r\nContent-Length: \(body.utf8.count)\r\n\r\n"
                + body)
        socket.shutdownWrite()
        let answer = try await socket.readHeadOffThePool()
        #expect(answer.hasPrefix("HTTP/1.1 200"), "\(answer)")
        #expect(try await agent.agent.spool.stats().events == 3)
        socket.close()
        await agent.stop()
    }

    /// Idle connections, slow heads and slow bodies are closed at their deadlines, and counted.
    @Test func slowClientsAreDisconnectedAtTheirDeadlines() async throws {
        let agent = try await TestAgent.start(configure: {
            $0.http.idleTimeout = .milliseconds(300)
            $0.http.headerTimeout = .milliseconds(300)
            $0.http.bodyTimeout = .milliseconds(300)
        })
        let idle = try BlockingHTTPSocket(port: agent.port)
        let slowHead = try BlockingHTTPSocket(port: agent.port)
        try slowHead.send("POST /v1/events HTTP/1.1\r\nHost: localhost\r\n")
        let slowBody = try BlockingHTTPSocket(port: agent.port)
        try slowBody.send("POST /v1/events HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"tenant\"")
        let started = ContinuousClock.now
        // Each close is timed on a thread of its own that waits for it, not after this task
        // resumes: on a loaded CI machine (PostgreSQL and the cluster tests run beside this)
        // resuming took seconds.
        let watches = [idle, slowHead, slowBody].map { $0.watchForClose() }
        for watch in watches {
            let (closed, at) = await watch.outcome()
            #expect(closed)
            // Below the smallest default deadline (10 s for a head): the configured 300 ms ones fired.
            #expect(at - started < .seconds(9))
        }
        let metrics = String(decoding: agent.agent.metrics.exposition(), as: UTF8.self)
        for phase in ["idle", "head", "body"] {
            #expect(metrics.contains("tally_agent_http_timeouts_total{phase=\"\(phase)\"} 1"), "\(phase): \(metrics)")
        }
        #expect(try await agent.agent.spool.stats().events == 0)
        // A connection that keeps to its deadlines is served as before.
        #expect(try await post(agent.port, body: event(1).jsonLine, contentType: "application/json").hasPrefix("HTTP/1.1 200"))
        for socket in [idle, slowHead, slowBody] { socket.close() }
        await agent.stop()
    }

    /// One connection over the cap is refused with 503 and Retry-After; a slot freed is reused.
    @Test func theConnectionCapRefusesWithRetryAfter() async throws {
        let agent = try await TestAgent.start(configure: { $0.http.maxConnections = 2 })
        let first = try BlockingHTTPSocket(port: agent.port)
        let second = try BlockingHTTPSocket(port: agent.port)
        for socket in [first, second] {
            try socket.send("GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
            #expect(try await socket.readHeadOffThePool().hasPrefix("HTTP/1.1 200"))
        }
        let third = try BlockingHTTPSocket(port: agent.port)
        try third.send("GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        let refused = try await third.readHeadOffThePool()
        #expect(refused.hasPrefix("HTTP/1.1 503") && refused.lowercased().contains("retry-after: 1"), "\(refused)")
        third.close()
        first.close()
        let reused = await eventually {
            (try? await post(agent.port, body: event(2).jsonLine, contentType: "application/json"))?.hasPrefix("HTTP/1.1 200") ?? false
        }
        #expect(reused)
        second.close()
        await agent.stop()
    }

    /// Bodies in flight share a memory budget: one that would pass it gets 503 (nothing kept)
    /// while the others complete; the budget is given back afterwards.
    @Test func bodiesInFlightShareAMemoryBudget() async throws {
        let agent = try await TestAgent.start(configure: {
            $0.maxBodyBytes = 1 << 20
            $0.http.maxBodyBytesInFlight = 1 << 20
        })
        var lines: [String] = []
        var size = 0
        var index = 0
        while size < 700_000 {
            let line = event(index).jsonLine
            lines.append(line)
            size += line.utf8.count + 1
            index += 1
        }
        let big = lines.joined(separator: "\n") + "\n"
        let bytes = Array(big.utf8)
        let holder = try BlockingHTTPSocket(port: agent.port)
        try holder.send(
            "POST /v1/events HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-ndjson\r\nContent-Length: \(bytes.count)\r\n\r\n")
        try holder.send(String(decoding: bytes[0..<600_000], as: UTF8.self))
        let held = await eventually { bodyBytesInFlight(agent) >= 600_000 }
        #expect(held)
        // The second body would pass the budget: refused at its head, before it is sent.
        let second = try BlockingHTTPSocket(port: agent.port)
        try second.send(
            "POST /v1/events HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-ndjson\r\nContent-Length: \(bytes.count)\r\n"
                + "Expect: 100-continue\r\n\r\n")
        let refused = try await second.readHeadOffThePool()
        #expect(refused.hasPrefix("HTTP/1.1 503") && refused.lowercased().contains("retry-after"), "\(refused)")
        second.close()
        try holder.send(String(decoding: bytes[600_000...], as: UTF8.self))
        #expect(try await holder.readHeadOffThePool().hasPrefix("HTTP/1.1 200"))
        #expect(try await agent.agent.spool.stats().events == lines.count)
        let released = await eventually { bodyBytesInFlight(agent) == 0 }
        #expect(released)
        holder.close()
        await agent.stop()
    }

    private func bodyBytesInFlight(_ agent: TestAgent) -> Int {
        let text = String(decoding: agent.agent.metrics.exposition(), as: UTF8.self)
        for line in text.split(separator: "\n") where line.hasPrefix("tally_agent_http_body_bytes_in_flight ") {
            return Int(Double(line.split(separator: " ").last ?? "") ?? -1)
        }
        return -1
    }

    @Test func theConnectionClockKeepsEachPhasesDeadline() {
        var limits = HTTPLimits()
        limits.idleTimeout = .seconds(60)
        limits.headerTimeout = .seconds(10)
        limits.bodyTimeout = .seconds(30)
        let start = ContinuousClock.now
        var clock = HTTPConnectionClock(limits: limits, now: start)
        #expect(clock.expired(now: start + .seconds(59)) == nil)
        #expect(clock.expired(now: start + .seconds(60)) == .idle)
        clock.bytesArrived(now: start + .seconds(1))
        #expect(clock.expired(now: start + .seconds(11)) == .head)
        clock.bytesArrived(now: start + .seconds(5))  // more bytes of the same head: no new time
        #expect(clock.expired(now: start + .seconds(11)) == .head)
        clock.headReceived(now: start + .seconds(2))
        #expect(clock.expired(now: start + .seconds(31)) == nil)
        #expect(clock.expired(now: start + .seconds(32)) == .body)
        clock.requestComplete()
        #expect(clock.expired(now: start + .seconds(3_600)) == nil)
        clock.answered(now: start + .seconds(40))
        #expect(clock.expired(now: start + .seconds(99)) == nil)
        #expect(clock.expired(now: start + .seconds(100)) == .idle)
    }
}
