import NIOCore
import NIOPosix
import TallyAgent
import TallyClient
import Testing

@testable import TallyCore

/// Section 1: events. Every row of ``EventRows`` is decoded (both decoder paths, at a fixed
/// "now"), and every row that does not need a fixed "now" is also sent to a real agent over
/// HTTP between two good lines of one NDJSON request: the good ones must be accepted and
/// spooled, the bad one must get its exact reason, field and message, and the matching counter
/// must move by exactly one.
@Suite("Bad input: events", .serialized)
struct EventTableTests {
    static let first = UsageEvent(
        tenant: "acme", metric: "api_calls", quantity: Quantity(1), timestamp: EventTime(microseconds: 1_768_467_600_000_000), id: "good-1")
    static let last = UsageEvent(
        tenant: "acme", metric: "api_calls", quantity: Quantity(2), timestamp: EventTime(microseconds: 1_768_467_600_000_000), id: "good-2")

    /// The request body of a row: the bad line between two good ones.
    static func body(_ row: EventRow) -> [UInt8] {
        Array((first.jsonLine + "\n").utf8) + row.line + Array(("\n" + last.jsonLine + "\n").utf8)
    }

    static func check(_ result: Result<UsageEvent, EventRejection>, _ expected: EventExpectation, _ row: EventRow) {
        switch (result, expected) {
        case (.success, .accepted): break
        case (.failure(let rejection), .rejected(let reason, let field, let message)):
            #expect(rejection.reason == reason, "\(row.name)")
            #expect(rejection.field == field, "\(row.name)")
            #expect(matches(rejection.message, message), "\(row.name): \(rejection.message)")
        case (.success(let event), .rejected):
            Issue.record("\(row.name): accepted as \(event)")
        case (.failure(let rejection), .accepted):
            Issue.record("\(row.name): rejected: \(rejection)")
        }
    }

    @Test(arguments: EventRows.rows)
    func decoder(_ row: EventRow) {
        let decoder = EventDecoder()
        let body = Self.body(row)
        let direct = decoder.decodeBody(body, now: EventRows.now)
        let full = body.withUnsafeBufferPointer { decoder.decodeBody($0, now: EventRows.now, direct: false) }
        #expect(direct.count == 3 && full.count == 3, "\(row.name): \(direct.count) results")
        guard direct.count == 3, full.count == 3 else { return }
        #expect(direct[0] == .success(Self.first))
        #expect(direct[2] == .success(Self.last))
        Self.check(direct[1], row.expected, row)
        // The fast path and the reference path agree on every row, message included.
        #expect(String(describing: direct[1]) == String(describing: full[1]), "\(row.name)")
    }

    @Test(arguments: EventRows.rows.filter(\.throughAgent))
    func agent(_ row: EventRow) async throws {
        let agent = try await AgentUnderTest.start()
        let exchange = HTTPExchange(host: "127.0.0.1", port: agent.port)
        let response = try await exchange.request(
            method: "POST", path: "/v1/events", headers: [("Content-Type", "application/x-ndjson")], body: ByteBuffer(bytes: Self.body(row)))
        let outcomes = try IngestAnswer.outcomes(from: response.body)
        let counters = agent.counters
        let spooled = try await agent.spooledEvents()
        await agent.stop()

        var expectedCounters = AgentCounters()
        expectedCounters.received = 3
        switch row.expected {
        case .accepted:
            #expect(response.status == 200, "\(row.name)")
            #expect(outcomes.count == 3 && outcomes.allSatisfy { if case .accepted = $0 { true } else { false } })
            #expect(spooled.count == 3 && spooled.first == Self.first && spooled.last == Self.last, "\(row.name)")
            expectedCounters.accepted = 3
        case .rejected(let reason, _, _):
            #expect(response.status == 207, "\(row.name)")
            #expect(outcomes.count == 3, "\(row.name): \(response.text)")
            guard outcomes.count == 3 else { return }
            #expect(outcomes[0] == .accepted(Fingerprint(of: Self.first)))
            #expect(outcomes[2] == .accepted(Fingerprint(of: Self.last)))
            if case .rejected(let rejection) = outcomes[1] {
                Self.check(.failure(rejection), row.expected, row)
            } else {
                Issue.record("\(row.name): \(outcomes[1])")
            }
            // The good events are durable in the spool, and nothing else is.
            #expect(spooled == [Self.first, Self.last], "\(row.name)")
            expectedCounters.accepted = 2
            expectedCounters.rejected = [reason: 1]
        }
        #expect(counters == expectedCounters, "\(row.name)")
    }
}

/// The same rows through the agent's Unix socket (NDJSON, one answer line per line): `ok
/// <fingerprint>` for the good lines, `err <reason> <field> <message>` for the bad one.
@Suite("Bad input: events on the socket", .serialized)
struct SocketEventTableTests {
    static func answer(_ expected: EventExpectation, _ event: UsageEvent? = nil) -> String {
        switch expected {
        case .accepted: return "ok *"
        case .rejected(let reason, let field, let message):
            let shown = field.map { $0.isEmpty || $0.contains(" ") ? "-" : $0 } ?? "-"
            return "err \(reason.rawValue) \(shown) \(message)"
        }
    }

    @Test(arguments: EventRows.rows.filter(\.throughAgent))
    func socket(_ row: EventRow) async throws {
        let agent = try await AgentUnderTest.start(socket: true)
        let path = try #require(agent.socketPath)
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(unixDomainSocketPath: path) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(
                        wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
                }
            }
        let text = try await channel.executeThenClose { inbound, outbound in
            try await outbound.write(ByteBuffer(bytes: EventTableTests.body(row)))
            // Half-closed: the agent answers every line, then closes.
            outbound.finish()
            var text = ""
            for try await chunk in inbound { text += String(buffer: chunk) }
            return text
        }
        let counters = agent.counters
        let spooled = try await agent.spooledEvents()
        await agent.stop()
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        #expect(lines.count == 4 && lines.last == "", "\(row.name): \(text)")
        guard lines.count == 4 else { return }
        #expect(lines[0] == "ok \(Fingerprint(of: EventTableTests.first))")
        #expect(matches(lines[1], Self.answer(row.expected)), "\(row.name): \(lines[1])")
        #expect(lines[2] == "ok \(Fingerprint(of: EventTableTests.last))")
        var expected = AgentCounters()
        expected.received = 3
        if case .rejected(let reason, _, _) = row.expected {
            expected.accepted = 2
            expected.rejected = [reason: 1]
            #expect(spooled == [EventTableTests.first, EventTableTests.last], "\(row.name)")
        } else {
            expected.accepted = 3
            #expect(spooled.count == 3, "\(row.name)")
        }
        #expect(counters == expected, "\(row.name)")
    }
}

/// What one whole request may get instead of per-event answers: refused on its media type, its
/// size, or for holding no event; and the Unix socket's line limit.
@Suite("Bad input: requests", .serialized)
struct RequestTableTests {
    struct Row: Sendable, CustomTestStringConvertible {
        let name: String
        let contentType: String?
        let body: String
        let status: Int
        let answer: String
        let refusedStatus: Int
        var testDescription: String { name }
    }

    static let good = EventTableTests.first.jsonLine + "\n"
    static let maxBodyBytes = 4096

    static let rows: [Row] = [
        Row(
            name: "body over max_body_bytes", contentType: "application/x-ndjson",
            body: good + String(repeating: " ", count: maxBodyBytes) + "\n" + good, status: 413,
            answer: #"{"error":"body_too_large","message":"the body exceeds 4096 bytes; send smaller batches"}"# + "\n", refusedStatus: 413),
        Row(
            name: "no events at all", contentType: "application/x-ndjson", body: "  \n\n", status: 400,
            answer: #"{"error":"no_events","message":"the body holds no event"}"# + "\n", refusedStatus: 400),
        Row(
            name: "text/plain", contentType: "text/plain", body: good, status: 415,
            answer:
                #"{"error":"unsupported_media_type","message":"events must be sent as application/json or application/x-ndjson (got Content-Type 'text/plain'); nothing of this request was kept"}"#
                + "\n", refusedStatus: 415),
        Row(
            name: "no Content-Type", contentType: nil, body: good, status: 415,
            answer:
                #"{"error":"unsupported_media_type","message":"events must be sent as application/json or application/x-ndjson (got no Content-Type); nothing of this request was kept"}"#
                + "\n", refusedStatus: 415),
    ]

    /// Nothing of a refused request is kept; only its refusal counter moves.
    @Test(arguments: rows)
    func refused(_ row: Row) async throws {
        let agent = try await AgentUnderTest.start { $0.maxBodyBytes = Self.maxBodyBytes }
        let exchange = HTTPExchange(host: "127.0.0.1", port: agent.port)
        let response = try await exchange.request(
            method: "POST", path: "/v1/events", headers: row.contentType.map { [("Content-Type", $0)] } ?? [], body: ByteBuffer(string: row.body))
        let counters = agent.counters
        let spooled = try await agent.spooledEvents()
        await agent.stop()
        #expect(response.status == row.status)
        #expect(response.text == row.answer)
        #expect(spooled.isEmpty)
        var expected = AgentCounters()
        expected.refused = [row.refusedStatus: 1]
        #expect(counters == expected)
    }

    /// An array body that is not JSON is one malformed result: nothing of it is kept, the caller
    /// is told, one event is counted as rejected.
    @Test func arrayBodyThatIsNotJSON() async throws {
        let agent = try await AgentUnderTest.start()
        let body = "[" + EventTableTests.first.jsonLine + ",{\"tenant\":}," + EventTableTests.last.jsonLine + "]"
        let response = try await HTTPExchange(host: "127.0.0.1", port: agent.port).request(
            method: "POST", path: "/v1/events", headers: [("Content-Type", "application/json")], body: ByteBuffer(string: body))
        let outcomes = try IngestAnswer.outcomes(from: response.body)
        let counters = agent.counters
        let spooled = try await agent.spooledEvents()
        await agent.stop()
        #expect(response.status == 400)
        #expect(outcomes == [.rejected(EventRejection(.malformed, field: nil, "malformed JSON at byte 112: unexpected character '}'"))])
        #expect(spooled.isEmpty)
        var expected = AgentCounters()
        expected.received = 1
        expected.rejected = [.malformed: 1]
        #expect(counters == expected)
    }

    /// A socket line over the limit (1 MiB) is answered `err limit_exceeded` and counted; the
    /// line before it is kept.
    @Test func socketLineOverTheLimit() async throws {
        let agent = try await AgentUnderTest.start(socket: true)
        let path = try #require(agent.socketPath)
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(unixDomainSocketPath: path) { channel in
                channel.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel) }
            }
        let text = try await channel.executeThenClose { inbound, outbound in
            try await outbound.write(ByteBuffer(string: Self.good + String(repeating: "x", count: (1 << 20) + 1)))
            var text = ""
            // The agent answers both lines and closes.
            for try await chunk in inbound { text += String(buffer: chunk) }
            return text
        }
        let counters = agent.counters
        let spooled = try await agent.spooledEvents()
        await agent.stop()
        #expect(
            text.split(separator: "\n") == [
                "ok \(Fingerprint(of: EventTableTests.first))", "err limit_exceeded - a line is longer than 1048576 bytes; closing",
            ])
        #expect(spooled == [EventTableTests.first])
        var expected = AgentCounters()
        expected.received = 2
        expected.accepted = 1
        expected.rejected = [.limitExceeded: 1]
        #expect(counters == expected)
    }
}
