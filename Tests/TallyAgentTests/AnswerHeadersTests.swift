import NIOCore
import TallyClient
import Testing

/// The headers of the agent's answers, as protocol/openapi-agent.yaml and RFC 9110 have them.
/// Found by schemathesis against that document: a POST without a Content-Type got its `415`
/// JSON body with no Content-Type at all (so did `413`), and a `405` named no `Allow`ed method.
@Suite struct AnswerHeadersTests {
    @Test func answersNameTheirMediaTypeAndTheAllowedMethods() async throws {
        let agent = try await TestAgent.start { $0.maxBodyBytes = 64 }
        let exchange = HTTPExchange(host: "127.0.0.1", port: agent.port)
        let untyped = try await exchange.request(method: "POST", path: "/v1/events", body: ByteBuffer(string: event(1).jsonLine))
        let tooLarge = try await exchange.request(
            method: "POST", path: "/v1/events", headers: [("Content-Type", "application/json")],
            body: ByteBuffer(string: String(repeating: " ", count: 65)))
        let wrongMethod = try await exchange.request(method: "PUT", path: "/healthz")
        let getEvents = try await exchange.request(method: "GET", path: "/v1/events")
        let metrics = try await exchange.request(method: "GET", path: "/metrics")
        await agent.stop()

        #expect(untyped.status == 415)
        #expect(untyped.header("Content-Type") == "application/json", "\(untyped.headers)")
        #expect(untyped.text.contains(#""error":"unsupported_media_type""#), "\(untyped.text)")
        #expect(tooLarge.status == 413)
        #expect(tooLarge.header("Content-Type") == "application/json", "\(tooLarge.headers)")
        #expect(tooLarge.text.contains(#""error":"body_too_large""#), "\(tooLarge.text)")
        #expect(wrongMethod.status == 405)
        #expect(wrongMethod.header("Content-Type") == "application/json", "\(wrongMethod.headers)")
        #expect(wrongMethod.header("Allow") == "GET", "\(wrongMethod.headers)")
        #expect(getEvents.status == 405)
        #expect(getEvents.header("Allow") == "POST", "\(getEvents.headers)")
        // A type named by the route stays the only one.
        #expect(metrics.headers.filter { $0.name.lowercased() == "content-type" }.map(\.value) == ["text/plain; version=0.0.4"])
    }
}
