import Foundation
import NIOCore
import NIOHTTP1
import TallyCore
import TallyTLS

/// Answers the API's reads that dashboards poll — charges, invoices, usage — on the event loop
/// that read the request, whenever the ledger can answer there at once (``Ledger/readNow(_:)``:
/// a free SQLite reader, one snapshot, no fold, no network). Every other request, and these
/// whenever the ledger cannot answer at once (PostgreSQL, every reader busy, an error to
/// explain), go on to Hummingbird's router unchanged, which answers them as before.
///
/// Why (issue 12, reads under full-speed ingest): while an agent drains into the collector both
/// cores are busy, and each thread a request wakes waits for one — measured with `perf sched`
/// during a drain, 0.2 ms on average and up to 5.5 ms per wakeup. Through Hummingbird a read wakes
/// three threads in turn: this event loop (the request), a Swift cooperative-pool thread (the
/// handler), this event loop again (the answer). NIO's event loops are not Swift task executors
/// (swift-nio 2.101), so the handler cannot be kept on the loop. Here a read wakes one thread.
/// The read itself is what the route's handler runs (the same parsing, key check, read and
/// rendering: ``CollectorAPI/answerNow(_:)``), so the answer is byte for byte the router's; the
/// event loop is held for the read's time (a tenant's aggregates of a period, well under a
/// millisecond at p50), as the cooperative thread was.
///
/// Sits between NIO's HTTP/1 decoder and Hummingbird's codec (so it sees HTTP/1 keep-alive), on
/// plain HTTP and HTTPS alike. A request answered here never overtakes an answer still owed: it
/// is only answered here while every request passed on has been answered, and while the
/// connection is writable.
final class DirectReads: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    /// What the handler needs of the collector: the answer of a read (nil: pass it on), and
    /// where each answer is counted.
    struct Reader: Sendable {
        var answer: @Sendable (DirectRequest) -> (route: String, answer: APIAnswer)?
        var record: @Sendable (_ route: String, _ status: Int, _ since: ContinuousClock.Instant) -> Void
        /// Plain HTTP refuses non-loopback peers (`PlaintextRemoteRefusal`): their requests are
        /// passed on, to be refused there.
        var loopbackOnly: Bool
        var serverName: String

        /// `api`'s reads, counted in `metrics` as the router counts them.
        init(
            api: CollectorAPI, metrics: HTTPRequestMetrics<TallyRequestContext>, loopbackOnly: Bool, serverName: String = "tally-collector"
        ) {
            answer = { api.answerNow($0) }
            record = { metrics.record(route: $0, status: $1, since: $2) }
            self.loopbackOnly = loopbackOnly
            self.serverName = serverName
        }
    }

    private let reader: Reader
    /// Requests passed on whose answers have not been written to the end yet.
    private var owed = 0
    /// The request being read: passed on, or answered here once its end has been read.
    private var current: Current = .none
    private var date = HTTPDate()
    /// Set once an answer said `Connection: close`: requests the client pipelined after that
    /// one are not read (HTTP/1.1 §9.6).
    private var closing = false

    private enum Current {
        case none
        case passedOn
        case answering(head: HTTPRequestHead, route: String, answer: APIAnswer, since: ContinuousClock.Instant)
    }

    init(reader: Reader) {
        self.reader = reader
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if closing { return }
        switch unwrapInboundIn(data) {
        case .head(let head):
            let since = ContinuousClock.now
            // Only while the connection takes writes: a client that sends reads without reading
            // the answers is left to the router, whose writes wait for the socket (backpressure),
            // and which then stops reading its requests.
            if owed == 0, head.method == .GET, context.channel.isWritable,
                let request = DirectRequest(head, remote: context.channel.remoteAddress, reader),
                let (route, answer) = reader.answer(request)
            {
                current = .answering(head: head, route: route, answer: answer, since: since)
                return
            }
            owed += 1
            current = .passedOn
            context.fireChannelRead(data)
        case .body:
            // A GET's body means nothing to these routes (the router ignores it too).
            if case .answering = current { return }
            context.fireChannelRead(data)
        case .end:
            guard case .answering(let head, let route, let answer, let since) = current else {
                current = .none
                context.fireChannelRead(data)
                return
            }
            current = .none
            // Counted before it is written (a client that has its answer finds it counted), as
            // the router's middleware counts an answer once it is made.
            reader.record(route, 200, since)
            send(answer, to: head, context: context)
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        // Hummingbird also writes answers to requests it never got (a 400 for a request the
        // decoder refused): never below zero.
        if case .end = unwrapOutboundIn(data) { owed = max(0, owed - 1) }
        context.write(data, promise: promise)
    }

    private func send(_ answer: APIAnswer, to request: HTTPRequestHead, context: ChannelHandlerContext) {
        let body = ByteBuffer(string: answer.body)
        var headers = HTTPHeaders()
        headers.reserveCapacity(6)
        headers.add(name: "Content-Type", value: answer.contentType)
        if let sha256 = answer.invoiceSHA256 { headers.add(name: CollectorHTTP.invoiceSHA256Header, value: sha256) }
        headers.add(name: "Content-Length", value: String(body.readableBytes))
        headers.add(name: "Date", value: date.now())
        headers.add(name: "Server", value: reader.serverName)
        let keepAlive = request.isKeepAlive
        if !keepAlive {
            headers.add(name: "Connection", value: "close")
        } else if request.version.major == 1, request.version.minor == 0 {
            headers.add(name: "Connection", value: "keep-alive")
        }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: .ok, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        if keepAlive {
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        } else {
            closing = true
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
        }
    }
}

/// What a read answered by ``DirectReads`` is made of.
struct DirectRequest: Sendable {
    /// The path as sent (percent-encoded), without the query.
    var path: Substring
    /// The raw query string (after `?`), if any.
    var query: String?
    var authorization: String?
    var accept: String?
    var remote: SocketAddress?

    /// nil for a target this handler leaves to the router: not origin-form (`/…`), or carrying a
    /// fragment; or a peer plain HTTP refuses.
    init?(_ head: HTTPRequestHead, remote: SocketAddress?, _ reader: DirectReads.Reader) {
        if reader.loopbackOnly, !(remote.map { PeerAddress.isLoopback($0) } ?? false) { return nil }
        let target = head.uri
        guard target.hasPrefix("/"), !target.contains("#") else { return nil }
        if let mark = target.firstIndex(of: "?") {
            path = target[..<mark]
            query = String(target[target.index(after: mark)...])
        } else {
            path = target[...]
        }
        // More than one value of either header: the router's reading (the first) is not this
        // one's business to guess.
        let authorizations = head.headers["Authorization"]
        let accepts = head.headers["Accept"]
        guard authorizations.count <= 1, accepts.count <= 1 else { return nil }
        authorization = authorizations.first
        accept = accepts.first
        self.remote = remote
    }
}

extension CollectorAPI {
    /// The answer to a read `DirectReads` may answer on the event loop — the routes
    /// `GET /v1/tenants/{tenant}/charges`, `…/invoices/{period}` and `/v1/usage` — when the
    /// ledger answers it at once and it is a 200. nil for anything else: the router answers it,
    /// errors included (each with its explanation).
    func answerNow(_ request: DirectRequest) -> (route: String, answer: APIAnswer)? {
        let parts = request.path.split(separator: "/", omittingEmptySubsequences: false)
        do {
            if parts.count == 3, parts[1] == "v1", parts[2] == "usage" {
                let query = try usageQuery(try formQuery(request.query), authorization: request.authorization, request.remote)
                guard let buckets = try service.usageNow(query)?.get() else { return nil }
                return ("/v1/usage", try usageAnswer(query, buckets))
            }
            guard parts.count >= 5, parts.count <= 6, parts[1] == "v1", parts[2] == "tenants" else { return nil }
            let tenant = try pathTenant(raw: String(parts[3]))
            let view: InvoiceView
            let route: String
            if parts.count == 5, parts[4] == "charges" {
                try access.grant(authorization: request.authorization, remote: request.remote).check(tenant: tenant)
                guard let charges = try service.invoiceNow(tenant: tenant, period: BillingPeriod(containing: service.clock()))?.get() else {
                    return nil
                }
                (view, route) = (charges, "/v1/tenants/{tenant}/charges")
            } else if parts.count == 6, parts[4] == "invoices" {
                try access.grant(authorization: request.authorization, remote: request.remote).check(tenant: tenant)
                let period = try parsePeriod(String(parts[5]))
                guard let invoice = try service.invoiceNow(tenant: tenant, period: period)?.get() else { return nil }
                (view, route) = (invoice, "/v1/tenants/{tenant}/invoices/{period}")
            } else {
                return nil
            }
            return (route, try invoiceAnswer(view, try formQuery(request.query), accept: request.accept))
        } catch {
            return nil
        }
    }
}

/// The `Date` header's value (RFC 9110 IMF-fixdate), formatted once a second.
struct HTTPDate {
    private var second = -1
    private var text = ""

    mutating func now() -> String {
        var clock = timespec()
        clock_gettime(CLOCK_REALTIME, &clock)
        let now = clock.tv_sec
        if Int(now) != second {
            second = Int(now)
            text = Self.format(now)
        }
        return text
    }

    static func format(_ seconds: time_t) -> String {
        var seconds = seconds
        var parts = tm()
        gmtime_r(&seconds, &parts)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(days[Int(parts.tm_wday)]), \(two(parts.tm_mday)) \(months[Int(parts.tm_mon)]) \(parts.tm_year + 1900) "
            + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) GMT"
    }
}
