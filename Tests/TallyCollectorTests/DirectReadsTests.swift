import Foundation
import Hummingbird
import Logging
import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOPosix
import Prometheus
import TallyCore
import TallyTestSupport
import Testing

@testable import TallyCollector

/// Reads answered on the event loop (``DirectReads``): the same answers as the router's, byte
/// for byte; everything else, errors included, left to the router; answers in the order the
/// requests came; HTTP/1 keep-alive and `Connection: close` as the router honours them.
@Suite struct DirectReadsTests {
    /// The fixture's API served on a loopback port, with or without ``DirectReads``. The router
    /// and the direct reads count their answers in registries of their own, so a test can tell
    /// who answered.
    final class Served: Sendable {
        let port: Int
        let routed = PrometheusCollectorRegistry()
        let direct = PrometheusCollectorRegistry()
        private let serving: Task<Void, any Error>

        init(_ fixture: BillingFixture, directReads: Bool) async throws {
            let api = CollectorAPI(
                service: fixture.service,
                access: APIAccess(
                    adminKey: BillingFixture.adminKey, tenantKeys: [BillingFixture.acmeKey: "acme", BillingFixture.globexKey: "globex"]))
            let router = CollectorHTTP.router(
                registry: PrometheusCollectorRegistry(), readiness: { .ready }, api: api,
                requestMetrics: HTTPRequestMetrics(factory: PrometheusMetricsFactory(registry: routed)))
            let reader = DirectReads.Reader(
                api: api, metrics: HTTPRequestMetrics(factory: PrometheusMetricsFactory(registry: direct)), loopbackOnly: true)
            let (bound, boundSink) = AsyncStream<Int>.makeStream()
            let app = Application(
                router: router, server: KeptHTTP1Channel.builder(directReads: directReads ? reader : nil),
                configuration: .init(address: .hostname("127.0.0.1", port: 0), serverName: "tally-collector"),
                onServerRunning: { channel in boundSink.yield(channel.localAddress?.port ?? 0) },
                logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
            serving = Task { try await app.runService() }
            var ports = bound.makeAsyncIterator()
            port = try #require(await ports.next())
        }

        /// How many answers of `status` the router (`routed`) or the direct reads gave for `route`.
        func answered(_ registry: PrometheusCollectorRegistry, route: String, status: Int = 200) -> Int {
            var bytes: [UInt8] = []
            registry.emit(into: &bytes)
            let series = #"tally_collector_http_requests_total{route="\#(route)",status="\#(status)"} "#
            let line = String(decoding: bytes, as: UTF8.self).split(separator: "\n").first { $0.hasPrefix(series) }
            return line.flatMap { Int($0.dropFirst(series.count)) } ?? 0
        }

        func stop() async {
            serving.cancel()
            _ = await serving.result
        }
    }

    /// One exchange on a new connection: the status line, the headers a client reads (Date
    /// aside), and the body.
    struct Answer: Equatable, CustomStringConvertible {
        var status: String
        var headers: [String]
        var body: String
        var description: String { "\(status) \(headers) \(body.prefix(300))" }

        init(_ response: (head: String, body: [UInt8])) {
            let lines = response.head.split(separator: "\r\n").map(String.init)
            status = lines.first ?? ""
            headers = lines.dropFirst().filter { !$0.lowercased().hasPrefix("date:") }.map { $0.lowercased() }.sorted()
            body = String(decoding: response.body, as: UTF8.self)
        }
    }

    static func request(_ target: String, key: String? = BillingFixture.adminKey, _ extra: [String] = [], version: String = "HTTP/1.1") -> String {
        var lines = ["GET \(target) \(version)", "Host: localhost"]
        if let key { lines.append("Authorization: Bearer \(key)") }
        return (lines + extra).joined(separator: "\r\n") + "\r\n\r\n"
    }

    /// One request on a new connection, and its answer. The blocking socket is used on a thread
    /// of NIO's pool, never on one of the few cooperative threads the router's handlers need.
    static func exchange(_ port: Int, _ request: String) async throws -> Answer {
        try await offThePool {
            let socket = try BlockingHTTPSocket(port: port)
            defer { socket.close() }
            try socket.send(request)
            return Answer(try socket.readResponse())
        }
    }

    /// A fixture with usage for acme (starter plan, this month and last) and globex (pro).
    static func billedFixture() async throws -> BillingFixture {
        let fixture = try BillingFixture()
        var events: [UsageEvent] = []
        for index in 0..<40 {
            let endpoint = index % 3 == 0 ? "/search" : "/items"
            let tenant = index % 4 == 0 ? "globex" : "acme"
            let day = index % 2 == 0 ? "2026-03-0\(index % 9 + 1)" : "2026-02-1\(index % 9)"
            events.append(try BillingFixture.event(tenant, Int64(index * 700 + 3), at: "\(day)T10:00:00Z", id: "d\(index)", [("endpoint", endpoint)]))
            events.append(try BillingFixture.event(tenant, metric: "exports", 1, at: "\(day)T11:00:00Z", id: "x\(index)", [("status", "200")]))
        }
        try await fixture.commit(events)
        return fixture
    }

    @Test func directAnswersAreTheRoutersAnswersByteForByte() async throws {
        let fixture = try await Self.billedFixture()
        let direct = try await Served(fixture, directReads: true)
        let routed = try await Served(fixture, directReads: false)
        let charges = "/v1/tenants/{tenant}/charges"
        let invoices = "/v1/tenants/{tenant}/invoices/{period}"
        let cases: [(request: String, route: String)] = [
            (Self.request("/v1/tenants/acme/charges"), charges),
            (Self.request("/v1/tenants/acme/charges", key: BillingFixture.acmeKey), charges),
            (Self.request("/v1/tenants/globex/charges?format=csv"), charges),
            (Self.request("/v1/tenants/globex/charges?format=document"), charges),
            (Self.request("/v1/tenants/globex/charges", ["Accept: text/html"]), charges),
            (Self.request("/v1/tenants/acme/charges", ["Accept: text/csv"]), charges),
            // A closed period: a final invoice, with its SHA-256 in a header.
            (Self.request("/v1/tenants/acme/invoices/2026-02"), invoices),
            (Self.request("/v1/tenants/globex/invoices/2026-03?format=csv"), invoices),
            (Self.request("/v1/usage?tenant=acme&metric=api_calls&granularity=day"), "/v1/usage"),
            (
                Self.request("/v1/usage?tenant=globex&metric=api_calls&group_by=endpoint&from=2026-02-01T00:00:00Z&to=2026-04-01T00:00:00Z"),
                "/v1/usage"
            ),
        ]
        for (number, (request, route)) in cases.enumerated() {
            let before = direct.answered(direct.direct, route: route)
            let fromTheLoop = try await Self.exchange(direct.port, request)
            let fromTheRouter = try await Self.exchange(routed.port, request)
            #expect(fromTheLoop.status == "HTTP/1.1 200 OK", "\(request): \(fromTheLoop)")
            #expect(fromTheLoop == fromTheRouter, "case \(number): \(request)")
            // Answered on the event loop indeed; the router of that server saw nothing.
            #expect(direct.answered(direct.direct, route: route) == before + 1, "case \(number): \(request)")
            #expect(direct.answered(direct.routed, route: route) == 0)
            #expect(routed.answered(routed.direct, route: route) == 0)
        }
        let final = try await Self.exchange(direct.port, Self.request("/v1/tenants/acme/invoices/2026-02"))
        #expect(final.headers.contains { $0.hasPrefix("tally-invoice-sha256: ") }, "\(final)")
        #expect(final.headers.contains("server: tally-collector"))
        await direct.stop()
        await routed.stop()
        await fixture.shutdown()
    }

    /// Errors (a wrong key, another tenant's key, an unknown tenant, a bad parameter) and every
    /// other route are the router's: the same explanation as before, counted by the router.
    @Test func errorsAndOtherRoutesAreTheRouters() async throws {
        let fixture = try await Self.billedFixture()
        let direct = try await Served(fixture, directReads: true)
        let routed = try await Served(fixture, directReads: false)
        let cases: [(request: String, route: String, status: Int)] = [
            (Self.request("/v1/tenants/acme/charges", key: "not-a-key-0123456789"), "/v1/tenants/{tenant}/charges", 401),
            (Self.request("/v1/tenants/acme/charges", key: BillingFixture.globexKey), "/v1/tenants/{tenant}/charges", 403),
            (Self.request("/v1/tenants/nobody/charges"), "/v1/tenants/{tenant}/charges", 404),
            (Self.request("/v1/tenants/acme/charges?format=pdf"), "/v1/tenants/{tenant}/charges", 400),
            (Self.request("/v1/tenants/acme/invoices/2026-13"), "/v1/tenants/{tenant}/invoices/{period}", 400),
            (Self.request("/v1/usage?tenant=acme"), "/v1/usage", 400),
            (Self.request("/v1/reconciliation?period=2026-03"), "/v1/reconciliation", 200),
            (Self.request("/readyz"), "/readyz", 200),
        ]
        for (request, route, status) in cases {
            let fromTheLoopServer = try await Self.exchange(direct.port, request)
            let fromTheRouterServer = try await Self.exchange(routed.port, request)
            #expect(fromTheLoopServer == fromTheRouterServer, "\(request)")
            #expect(fromTheLoopServer.status.hasPrefix("HTTP/1.1 \(status) "), "\(request): \(fromTheLoopServer)")
            #expect(direct.answered(direct.routed, route: route, status: status) >= 1, "\(request)")
        }
        for route in ["/v1/tenants/{tenant}/charges", "/v1/tenants/{tenant}/invoices/{period}", "/v1/usage"] {
            #expect(direct.answered(direct.direct, route: route) == 0, "\(route)")
        }
        await direct.stop()
        await routed.stop()
        await fixture.shutdown()
    }

    /// Requests sent together come back in their order: a read that could be answered on the
    /// loop while the router still owes an earlier answer goes to the router too; once nothing
    /// is owed, reads are answered on the loop again.
    @Test func pipelinedRequestsAreAnsweredInOrder() async throws {
        let fixture = try await Self.billedFixture()
        let direct = try await Served(fixture, directReads: true)
        let socket = try BlockingHTTPSocket(port: direct.port)
        defer { socket.close() }
        let charges = Self.request("/v1/tenants/acme/charges")
        let reconciliation = Self.request("/v1/reconciliation?period=2026-03")
        try socket.send(reconciliation + charges + Self.request("/v1/tenants/globex/charges?format=csv") + Self.request("/metrics"))
        let answers = try await offThePool { try (0..<4).map { _ in Answer(try socket.readResponse()) } }
        #expect(answers[0].body.contains("\"rows\""), "\(answers[0])")
        #expect(answers[1].body.contains("\"tenant\":\"acme\""), "\(answers[1])")
        #expect(answers[2].headers.contains("content-type: text/csv; charset=utf-8"), "\(answers[2])")
        #expect(answers[2].body.contains("globex"))
        #expect(answers[3].headers.contains("content-type: text/plain; version=0.0.4; charset=utf-8"), "\(answers[3])")
        // Nothing owed now: the next read on this connection is answered on the loop.
        let before = direct.answered(direct.direct, route: "/v1/tenants/{tenant}/charges")
        try socket.send(charges)
        #expect(try await offThePool { Answer(try socket.readResponse()) } == answers[1])
        #expect(direct.answered(direct.direct, route: "/v1/tenants/{tenant}/charges") == before + 1)
        await direct.stop()
        await fixture.shutdown()
    }

    /// `Connection: close` and HTTP/1.0 without keep-alive end the connection after the answer;
    /// HTTP/1.0 with `Connection: keep-alive` keeps it, and says so.
    @Test func keepAliveIsHonoured() async throws {
        let fixture = try await Self.billedFixture()
        let direct = try await Served(fixture, directReads: true)
        let target = "/v1/tenants/acme/charges"
        for (request, closes) in [
            (Self.request(target, ["Connection: close"]), true),
            (Self.request(target, version: "HTTP/1.0"), true),
            (Self.request(target, ["Connection: keep-alive"], version: "HTTP/1.0"), false),
            (Self.request(target), false),
        ] {
            let socket = try BlockingHTTPSocket(port: direct.port, timeoutSeconds: 2)
            defer { socket.close() }
            let before = direct.answered(direct.direct, route: "/v1/tenants/{tenant}/charges")
            try socket.send(request)
            let answer = try await offThePool { Answer(try socket.readResponse()) }
            #expect(answer.status.hasSuffix(" 200 OK"), "\(answer)")
            #expect(direct.answered(direct.direct, route: "/v1/tenants/{tenant}/charges") == before + 1)
            if closes {
                #expect(answer.headers.contains("connection: close"), "\(request): \(answer)")
                #expect(try await offThePool { try socket.waitForClose() }, "\(request)")
            } else {
                if request.contains("HTTP/1.0") { #expect(answer.headers.contains("connection: keep-alive"), "\(answer)") }
                try socket.send(request)
                #expect(try await offThePool { Answer(try socket.readResponse()) }.body == answer.body, "\(request)")
            }
        }
        await direct.stop()
        await fixture.shutdown()
    }

    /// What the handler leaves to the router before any read: a peer plain HTTP refuses, a
    /// target that is not a plain path, an ambiguous key.
    @Test func requestsLeftToTheRouter() throws {
        let fixture = try BillingFixture()
        let api = CollectorAPI(service: fixture.service, access: APIAccess(adminKey: nil, tenantKeys: [:]))
        let metrics = HTTPRequestMetrics<TallyRequestContext>(factory: PrometheusMetricsFactory(registry: PrometheusCollectorRegistry()))
        let loopbackOnly = DirectReads.Reader(api: api, metrics: metrics, loopbackOnly: true)
        let anyPeer = DirectReads.Reader(api: api, metrics: metrics, loopbackOnly: false)
        let local = try SocketAddress(ipAddress: "127.0.0.1", port: 4000)
        let remote = try SocketAddress(ipAddress: "10.1.2.3", port: 4000)
        func head(_ uri: String, _ headers: [(String, String)] = []) -> HTTPRequestHead {
            HTTPRequestHead(version: .http1_1, method: .GET, uri: uri, headers: HTTPHeaders(headers))
        }
        let plain = try #require(DirectRequest(head("/v1/usage?tenant=a&metric=m"), remote: local, loopbackOnly))
        #expect(plain.path == "/v1/usage" && plain.query == "tenant=a&metric=m" && plain.authorization == nil)
        #expect(DirectRequest(head("/v1/usage"), remote: remote, loopbackOnly) == nil)
        #expect(DirectRequest(head("/v1/usage"), remote: nil, loopbackOnly) == nil)
        #expect(DirectRequest(head("/v1/usage"), remote: remote, anyPeer) != nil)
        #expect(DirectRequest(head("http://localhost/v1/usage"), remote: local, loopbackOnly) == nil)
        #expect(DirectRequest(head("/v1/usage#part"), remote: local, loopbackOnly) == nil)
        #expect(DirectRequest(head("/v1/usage", [("Authorization", "Bearer a"), ("Authorization", "Bearer b")]), remote: local, loopbackOnly) == nil)
        // Keyless loopback reads (no admin key configured) are answered; a path of another
        // route, or with a trailing part, is not this handler's.
        let asked = try #require(DirectRequest(head("/v1/tenants/acme/charges/extra"), remote: local, loopbackOnly))
        #expect(api.answerNow(asked) == nil)
        #expect(api.answerNow(try #require(DirectRequest(head("/v1/usage/"), remote: local, loopbackOnly))) == nil)
    }

    /// A ``DirectReads`` handler alone on an embedded channel from a loopback peer, reading
    /// `fixture`'s ledger with the admin key.
    static func embeddedDirectReads(_ fixture: BillingFixture) throws -> EmbeddedChannel {
        let api = CollectorAPI(service: fixture.service, access: APIAccess(adminKey: BillingFixture.adminKey, tenantKeys: [:]))
        let metrics = HTTPRequestMetrics<TallyRequestContext>(factory: PrometheusMetricsFactory(registry: PrometheusCollectorRegistry()))
        let channel = EmbeddedChannel(handler: DirectReads(reader: DirectReads.Reader(api: api, metrics: metrics, loopbackOnly: true)))
        channel.remoteAddress = try SocketAddress(ipAddress: "127.0.0.1", port: 40000)
        return channel
    }

    /// A connection that takes no more writes (a client sending reads without reading the
    /// answers) gets no answer from the loop: the request goes on to the router, whose writes
    /// wait for the socket. Once it is writable again and nothing is owed, reads are answered
    /// on the loop again.
    @Test func aConnectionThatTakesNoWritesIsLeftToTheRouter() throws {
        let fixture = try BillingFixture()
        let channel = try Self.embeddedDirectReads(fixture)
        let head = HTTPRequestHead(
            version: .http1_1, method: .GET, uri: "/v1/tenants/globex/charges",
            headers: HTTPHeaders([("Authorization", "Bearer \(BillingFixture.adminKey)")]))
        func send() throws {
            try channel.writeInbound(HTTPServerRequestPart.head(head))
            try channel.writeInbound(HTTPServerRequestPart.end(nil))
        }
        func passedOn() throws -> Bool {
            guard case .head(let seen)? = try channel.readInbound(as: HTTPServerRequestPart.self) else { return false }
            guard case .end? = try channel.readInbound(as: HTTPServerRequestPart.self) else { return false }
            return seen.uri == head.uri
        }
        func answeredHere() throws -> Bool {
            guard case .head(let answer)? = try channel.readOutbound(as: HTTPServerResponsePart.self) else { return false }
            guard case .body? = try channel.readOutbound(as: HTTPServerResponsePart.self) else { return false }
            guard case .end? = try channel.readOutbound(as: HTTPServerResponsePart.self) else { return false }
            return answer.status == .ok
        }
        channel.isWritable = false
        try send()
        #expect(try passedOn())
        #expect(try channel.readOutbound(as: HTTPServerResponsePart.self) == nil)
        // The router's answer goes out; writable again, the next read is answered here.
        channel.isWritable = true
        try channel.writeOutbound(HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: .ok)))
        try channel.writeOutbound(HTTPServerResponsePart.end(nil))
        while try channel.readOutbound(as: HTTPServerResponsePart.self) != nil {}
        try send()
        #expect(try answeredHere())
        #expect(try channel.readInbound(as: HTTPServerRequestPart.self) == nil)
        _ = try channel.finish()
    }

    /// After an answer that says `Connection: close`, requests the client pipelined behind it
    /// are neither answered nor passed on: the connection closes after the one answer.
    @Test func nothingIsReadAfterAnAnswerThatCloses() throws {
        let fixture = try BillingFixture()
        let channel = try Self.embeddedDirectReads(fixture)
        let key = ("Authorization", "Bearer \(BillingFixture.adminKey)")
        let closing = HTTPRequestHead(
            version: .http1_1, method: .GET, uri: "/v1/tenants/globex/charges", headers: HTTPHeaders([key, ("Connection", "close")]))
        let next = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/v1/tenants/globex/charges", headers: HTTPHeaders([key]))
        for part in [HTTPServerRequestPart.head(closing), .end(nil), .head(next), .end(nil), .head(next), .end(nil)] {
            try channel.writeInbound(part)
        }
        var answers = 0
        while let part = try channel.readOutbound(as: HTTPServerResponsePart.self) {
            if case .head(let head) = part {
                answers += 1
                #expect(head.headers["Connection"] == ["close"])
            }
        }
        #expect(answers == 1)
        #expect(try channel.readInbound(as: HTTPServerRequestPart.self) == nil, "a request after the close went on to the router")
        _ = try? channel.finish()
    }

    @Test func theDateHeaderIsAnIMFFixdate() {
        #expect(HTTPDate.format(0) == "Thu, 01 Jan 1970 00:00:00 GMT")
        #expect(HTTPDate.format(1_796_558_405) == "Sun, 06 Dec 2026 12:00:05 GMT")
        #expect(HTTPDate.format(1_772_420_409) == "Mon, 02 Mar 2026 03:00:09 GMT")
    }
}
