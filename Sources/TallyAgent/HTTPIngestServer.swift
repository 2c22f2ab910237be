public import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
public import ServiceLifecycle
import Synchronization
public import TallyConfig
import TallyService
import TallySpool

/// The agent's local HTTP API (NIOHTTP1 on NIOAsyncChannel; loopback by default):
///
/// - `POST /v1/events`: one JSON object, an array of them, or NDJSON. Answered per event
///   (see `IngestAnswerWriter`) only once the accepted events are durable in the spool. A full
///   spool answers `503` (policy block) or `429` (policy reject) with `Retry-After`, and keeps
///   nothing of that request. A body over the limit gets `413`; no events at all `400`. A
///   request with `Expect: 100-continue` gets `100 Continue` at once (or its `413` before the
///   body is sent).
/// - `GET /healthz`: `200` when the spool is writable and a collector is reachable, else `503`;
///   the body says which.
/// - `GET /metrics`: Prometheus text.
public struct HTTPIngestServer: Service {
    let address: HostPort
    let ingest: EventIngest
    let maxBodyBytes: Int
    let health: AgentHealth
    let logger: Logger
    let onBound: @Sendable (Int) -> Void

    let limits: HTTPLimits
    let admission: HTTPAdmission

    /// `onBound` receives the bound port (useful with port 0 in tests).
    public init(
        address: HostPort, ingest: EventIngest, maxBodyBytes: Int, limits: HTTPLimits = HTTPLimits(), health: AgentHealth,
        logger: Logger, onBound: @escaping @Sendable (Int) -> Void = { _ in }
    ) {
        self.address = address
        self.ingest = ingest
        self.maxBodyBytes = maxBodyBytes
        self.limits = limits
        self.admission = HTTPAdmission(limits: limits)
        self.health = health
        self.logger = logger
        self.onBound = onBound
    }

    public func run() async throws {
        // TCP_NODELAY is NIO's default; no per-connection socket option is set here, so nothing
        // about one connection can fail the listener.
        let accepted = AcceptedConnections()
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            // A client that half-closes after its request still gets its answer.
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .bind(host: address.host, port: address.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    let clock = ConnectionClock(limits: limits)
                    try channel.pipeline.syncOperations.addHandler(ByteArrivalObserver(clock: clock), position: .first)
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    let wrapped: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart> = try accepted.wrap(channel)
                    return (wrapped, clock)
                }
            }
        let port = server.channel.localAddress?.port ?? address.port
        logger.info("HTTP ingest listening", metadata: ["address": "\(address.host):\(port)"])
        onBound(port)
        try await AcceptLoop.run(server, accepted: accepted) { connection, clock in await admit(connection, clock: clock) }
    }

    /// Serves a connection within the connection cap, or refuses it with `503`; either way under
    /// the connection's deadlines.
    private func admit(_ connection: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>, clock: ConnectionClock) async {
        let channel = connection.channel
        let metrics = ingest.metrics
        let watchdog = channel.eventLoop.scheduleRepeatedTask(initialDelay: TimeAmount(limits.checkInterval), delay: TimeAmount(limits.checkInterval))
        { task in
            guard let phase = clock.expired() else { return }
            metrics.httpTimeouts[phase]?.increment()
            task.cancel()
            channel.close(promise: nil)
        }
        defer { watchdog.cancel() }
        guard admission.admitConnection() else {
            await refuseOverCap(connection)
            return
        }
        metrics.httpConnections.increment()
        defer {
            admission.releaseConnection()
            metrics.httpConnections.decrement()
        }
        await serve(connection, clock: clock)
    }

    /// A connection past the cap: its first request is answered `503` with `Retry-After` (an
    /// HTTP answer needs a request before it), and the connection closes.
    private func refuseOverCap(_ connection: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>) async {
        ingest.metrics.httpRefusedConnections.increment()
        logger.warning("HTTP connection refused: at the connection cap", metadata: ["max_connections": "\(limits.maxConnections)"])
        try? await connection.executeThenClose { inbound, outbound in
            for try await part in inbound {
                guard case .head = part else { continue }
                ingest.metrics.refused(status: 503)
                let answer = IngestAnswerWriter.error(
                    "too_many_connections",
                    "the agent has \(limits.maxConnections) connections open; retry shortly; nothing of this request was kept",
                    allocator: connection.channel.allocator)
                try await respond(outbound, status: 503, headers: [("Retry-After", "1")], body: answer, keepAlive: false)
                return
            }
        }
    }

    /// Serves one connection's requests in order (keep-alive), closing it between requests once
    /// a graceful shutdown began.
    private func serve(_ connection: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>, clock: ConnectionClock) async {
        let state = ConnectionState()
        let channel = connection.channel
        var reserved = 0
        defer { release(&reserved) }
        await withGracefulShutdownHandler {
            do {
                try await connection.executeThenClose { inbound, outbound in
                    var head: HTTPRequestHead?
                    var body = channel.allocator.buffer(capacity: 0)
                    var tooLarge = false
                    // Bodies with a Content-Length reserve their memory at the head, so that a
                    // refusal comes before the body is sent; chunked ones reserve as they come.
                    var reservedAhead = false
                    // The spool is told of an events request as soon as its head is read, so that
                    // its group commit waits for this request's append rather than syncing the
                    // others' without it (FsyncPolicy.interval). Ends with the append, or when
                    // the request is refused or the connection goes (the arrival's deinit).
                    var arrival: SpoolArrival?
                    for try await part in inbound {
                        switch part {
                        case .head(let requestHead):
                            clock.update { $0.headReceived(now: .now) }
                            state.setBusy(true)
                            head = requestHead
                            body.clear()
                            tooLarge = false
                            arrival?.end()
                            arrival = nil
                            if let refusal = refusal(of: requestHead) {
                                ingest.metrics.refused(status: refusal.status)
                                try await respond(outbound, status: refusal.status, body: refusal.body(channel.allocator), keepAlive: false)
                                return
                            }
                            if Self.isEventsRequest(requestHead) { arrival = ingest.spool.arrival() }
                            reservedAhead = false
                            if let length = requestHead.headers.first(name: "content-length").flatMap(Int.init) {
                                if length > maxBodyBytes {
                                    tooLarge = true
                                } else if length > 0 {
                                    guard admission.reserveBody(length) else {
                                        try await refuseBusy(outbound, allocator: channel.allocator)
                                        return
                                    }
                                    reserved += length
                                    reservedAhead = true
                                    body.reserveCapacity(length)
                                    ingest.metrics.httpBodyBytesInFlight.increment(by: Double(length))
                                }
                            }
                            // curl and many HTTP libraries send `Expect: 100-continue` before a
                            // large body and wait (curl: 1 s) for the go-ahead: give it at once,
                            // or refuse an oversized body before it is sent (RFC 9110 §10.1.1).
                            if requestHead.headers[canonicalForm: "expect"].contains(where: { $0.lowercased() == "100-continue" }) {
                                if tooLarge {
                                    try await refuseTooLarge(outbound, allocator: channel.allocator)
                                    return
                                }
                                try await outbound.write(.head(HTTPResponseHead(version: requestHead.version, status: .continue)))
                            }
                        case .body(var chunk):
                            if !tooLarge && body.readableBytes + chunk.readableBytes > maxBodyBytes { tooLarge = true }
                            if tooLarge { continue }
                            if !reservedAhead {
                                guard admission.reserveBody(chunk.readableBytes) else {
                                    try await refuseBusy(outbound, allocator: channel.allocator)
                                    return
                                }
                                reserved += chunk.readableBytes
                                ingest.metrics.httpBodyBytesInFlight.increment(by: Double(chunk.readableBytes))
                            }
                            body.writeBuffer(&chunk)
                        case .end:
                            guard let request = head else { continue }
                            clock.update { $0.requestComplete() }
                            if tooLarge {
                                try await refuseTooLarge(outbound, allocator: channel.allocator)
                                return
                            }
                            let keepAlive = request.isKeepAlive && !state.isShuttingDown
                            let (status, extra, answer) = await route(request, body: body, arrival: arrival, allocator: channel.allocator)
                            arrival?.end()
                            arrival = nil
                            // The body's memory goes back before the answer is written.
                            body = channel.allocator.buffer(capacity: 0)
                            release(&reserved)
                            try await respond(outbound, status: status, headers: extra, body: answer, keepAlive: keepAlive)
                            clock.update { $0.answered(now: .now) }
                            head = nil
                            if !keepAlive || !state.setBusy(false) { return }
                        }
                    }
                }
            } catch {
                logger.debug("HTTP connection ended", metadata: ["error": "\(error)"])
            }
        } onGracefulShutdown: {
            if state.beginShutdown() { channel.close(promise: nil) }
        }
    }

    private func release(_ reserved: inout Int) {
        guard reserved > 0 else { return }
        ingest.metrics.httpBodyBytesInFlight.decrement(by: Double(reserved))
        admission.releaseBody(reserved)
        reserved = 0
    }

    /// The media types `POST /v1/events` takes. A browser can send a cross-site POST without
    /// asking first only with `text/plain`, `application/x-www-form-urlencoded`,
    /// `multipart/form-data` or no type at all ("simple requests"); refusing everything but JSON
    /// and NDJSON means no web page open on this machine can forge usage through the agent.
    static let eventMediaTypes: Set<String> = ["application/json", "application/x-ndjson", "application/ndjson"]

    /// A request refused on its head alone: `415` for events in another media type.
    private func refusal(of request: HTTPRequestHead) -> (status: Int, body: (ByteBufferAllocator) -> ByteBuffer)? {
        guard Self.isEventsRequest(request) else { return nil }
        let declared = request.headers.first(name: "content-type") ?? ""
        let mediaType = declared.split(separator: ";", maxSplits: 1).first.map { $0.filter { $0 != " " && $0 != "\t" }.lowercased() } ?? ""
        if Self.eventMediaTypes.contains(mediaType) { return nil }
        let shown = declared.isEmpty ? "no Content-Type" : "Content-Type '\(declared.prefix(100))'"
        return (
            415,
            { allocator in
                IngestAnswerWriter.error(
                    "unsupported_media_type",
                    "events must be sent as application/json or application/x-ndjson (got \(shown)); nothing of this request was kept",
                    allocator: allocator)
            }
        )
    }

    /// `503` for a body that would pass the memory budget of bodies in flight; the connection
    /// closes (the rest of the body is not read).
    private func refuseBusy(_ outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>, allocator: ByteBufferAllocator) async throws {
        ingest.metrics.refused(status: 503)
        logger.warning(
            "HTTP body refused: the memory budget for bodies in flight is used up",
            metadata: [
                "max_body_bytes_in_flight": "\(limits.maxBodyBytesInFlight)"
            ])
        let answer = IngestAnswerWriter.error(
            "busy", "the agent is holding \(limits.maxBodyBytesInFlight) bytes of request bodies; retry shortly; nothing of this request was kept",
            allocator: allocator)
        try await respond(outbound, status: 503, headers: [("Retry-After", "1")], body: answer, keepAlive: false)
    }

    static func isEventsRequest(_ request: HTTPRequestHead) -> Bool {
        request.method == .POST && (request.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? request.uri) == "/v1/events"
    }

    private func route(
        _ request: HTTPRequestHead, body: ByteBuffer, arrival: SpoolArrival?, allocator: ByteBufferAllocator
    ) async -> (Int, [(String, String)], ByteBuffer) {
        let path = request.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? request.uri
        let json = [("Content-Type", "application/json")]
        switch (request.method, path) {
        case (.POST, "/v1/events"):
            do {
                let outcomes = try await ingest.ingest(body: body, arrival: arrival)
                if outcomes.isEmpty {
                    ingest.metrics.refused(status: 400)
                    return (400, json, IngestAnswerWriter.error("no_events", "the body holds no event", allocator: allocator))
                }
                return (IngestAnswerWriter.status(of: outcomes), json, IngestAnswerWriter.json(outcomes, allocator: allocator))
            } catch {
                if let full = error.fullAnswer {
                    let message = "\(error); nothing of this request was kept"
                    return (
                        full.status, json + [("Retry-After", String(full.retryAfterSeconds))],
                        IngestAnswerWriter.error("spool_full", message, allocator: allocator)
                    )
                }
                logger.error("spool append failed", metadata: ["error": "\(error)"])
                return (500, json, IngestAnswerWriter.error("spool_error", "\(error); nothing of this request was kept", allocator: allocator))
            }
        case (.GET, "/healthz"):
            let report = await health.check()
            var out = allocator.buffer(capacity: 128)
            out.writeString(report.json)
            return (report.isHealthy ? 200 : 503, json, out)
        case (.GET, "/metrics"):
            await health.refreshSpoolGauges()
            var out = allocator.buffer(capacity: 8192)
            out.writeBytes(ingest.metrics.exposition())
            return (200, [("Content-Type", "text/plain; version=0.0.4")], out)
        case (_, "/v1/events"), (_, "/healthz"), (_, "/metrics"):
            // RFC 9110 §15.5.6: a 405 names the methods the path takes.
            let allow = [("Allow", path == "/v1/events" ? "POST" : "GET")]
            return (
                405, json + allow,
                IngestAnswerWriter.error("method_not_allowed", "\(request.method) is not allowed on \(path)", allocator: allocator)
            )
        default:
            return (404, json, IngestAnswerWriter.error("not_found", "no such path: \(path)", allocator: allocator))
        }
    }

    /// `413` for a body over the limit, and the connection closes (the rest of the body is not read).
    private func refuseTooLarge(
        _ outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>, allocator: ByteBufferAllocator
    ) async throws {
        ingest.metrics.refused(status: 413)
        let answer = IngestAnswerWriter.error(
            "body_too_large", "the body exceeds \(maxBodyBytes) bytes; send smaller batches", allocator: allocator)
        try await respond(outbound, status: 413, body: answer, keepAlive: false)
    }

    /// Writes one answer. Every body this server writes is JSON unless `headers` name another
    /// `Content-Type` (`/metrics`), so the refusals (`413`, `415`, `503`) say so too.
    private func respond(
        _ outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>, status: Int, headers: [(String, String)] = [],
        body: ByteBuffer, keepAlive: Bool
    ) async throws {
        var head = HTTPResponseHead(version: .http1_1, status: HTTPResponseStatus(statusCode: status))
        for (name, value) in headers { head.headers.add(name: name, value: value) }
        if !head.headers.contains(name: "Content-Type") { head.headers.add(name: "Content-Type", value: "application/json") }
        head.headers.add(name: "Content-Length", value: String(body.readableBytes))
        if !keepAlive { head.headers.add(name: "Connection", value: "close") }
        try await outbound.write(contentsOf: [.head(head), .body(.byteBuffer(body)), .end(nil)])
    }
}

/// A connection's ``HTTPConnectionClock``, shared by its loop, its byte observer and its watchdog.
final class ConnectionClock: Sendable {
    private let clock: Mutex<HTTPConnectionClock>

    init(limits: HTTPLimits) { clock = Mutex(HTTPConnectionClock(limits: limits, now: .now)) }

    func update(_ body: (inout HTTPConnectionClock) -> Void) { clock.withLock { body(&$0) } }

    func expired() -> HTTPConnectionClock.Phase? { clock.withLock { $0.expired(now: .now) } }
}

/// Tells the connection's clock when a request's first bytes arrive (before the HTTP decoder).
final class ByteArrivalObserver: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    private let clock: ConnectionClock

    init(clock: ConnectionClock) { self.clock = clock }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        clock.update { $0.bytesArrived(now: .now) }
        context.fireChannelRead(data)
    }
}

/// Whether a connection is inside a request, and whether shutdown began.
private final class ConnectionState: Sendable {
    private let state = Mutex<(busy: Bool, shuttingDown: Bool)>((false, false))

    /// Returns false when the connection should close now (shutdown began and it is idle).
    @discardableResult
    func setBusy(_ busy: Bool) -> Bool {
        state.withLock { state in
            state.busy = busy
            return !(state.shuttingDown && !busy)
        }
    }

    var isShuttingDown: Bool { state.withLock { $0.shuttingDown } }

    /// Marks shutdown; true when the connection is idle and may be closed at once.
    func beginShutdown() -> Bool {
        state.withLock { state in
            state.shuttingDown = true
            return !state.busy
        }
    }
}
