import Foundation
import Synchronization
import NIOPosix
import TallyCore
import TallyTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `Expect: 100-continue`, as curl sends it for bodies over 1 MB: the agent must answer at once,
/// or the client waits a second per request before sending anyway.
@Suite("HTTP Expect: 100-continue")
struct ExpectContinueTests {
    @Test func theGoAheadComesBeforeTheBodyAndTheBodyIsIngested() async throws {
        let agent = try await TestAgent.start()
        let body = (0..<3).map { event($0).jsonLine }.joined(separator: "\n")
        let socket = try BlockingHTTPSocket(port: agent.port)
        try socket.send(
            "POST /v1/events HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-ndjson\r\n"
                + "Content-Length: \(body.utf8.count)\r\nExpect: 100-continue\r\n\r\n")
        // Nothing of the body has been sent: the interim answer must come on its own.
        let interim = try await socket.readHeadOffThePool()
        #expect(interim.hasPrefix("HTTP/1.1 100 Continue"), "\(interim)")
        try socket.send(body)
        let final = try await socket.readHeadOffThePool()
        #expect(final.hasPrefix("HTTP/1.1 200"), "\(final)")
        #expect(try await agent.agent.spool.stats().events == 3)
        socket.close()
        await agent.stop()
    }

    @Test func anOversizedBodyIsRefusedBeforeItIsSent() async throws {
        let agent = try await TestAgent.start(configure: { $0.maxBodyBytes = 1_000 })
        let socket = try BlockingHTTPSocket(port: agent.port)
        try socket.send(
            "POST /v1/events HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n")
        let answer = try await socket.readHeadOffThePool()
        #expect(answer.hasPrefix("HTTP/1.1 413"), "\(answer)")
        #expect(try await agent.agent.spool.stats().events == 0)
        socket.close()
        await agent.stop()
    }
}
