public import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
public import ServiceLifecycle
import Synchronization
public import TallyConfig
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

    /// `onBound` receives the bound port (useful with port 0 in tests).
    public init(
        address: HostPort, ingest: EventIngest, maxBodyBytes: Int, health: AgentHealth, logger: Logger,
        onBound: @escaping @Sendable (Int) -> Void = { _ in }
    ) {
        self.address = address
        self.ingest = ingest
        self.maxBodyBytes = maxBodyBytes
        self.health = health
        self.logger = logger
        self.onBound = onBound
    }

    public func run() async throws {
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .bind(host: address.host, port: address.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    return try NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>(wrappingChannelSynchronously: channel)
                }
            }
        let port = server.channel.localAddress?.port ?? address.port
        logger.info("HTTP ingest listening", metadata: ["address": "\(address.host):\(port)"])
        onBound(port)
        try await withGracefulShutdownHandler {
            try await server.executeThenClose { connections in
                try await withThrowingDiscardingTaskGroup { group in
                    for try await connection in connections {
                        group.addTask { await serve(connection) }
                    }
                }
            }
        } onGracefulShutdown: {
            server.channel.close(promise: nil)
        }
    }

    /// Serves one connection's requests in order (keep-alive), closing it between requests once
    /// a graceful shutdown began.
    private func serve(_ connection: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>) async {
        let state = ConnectionState()
        let channel = connection.channel
        await withGracefulShutdownHandler {
            do {
                try await connection.executeThenClose { inbound, outbound in
                    var head: HTTPRequestHead?
                    var body = channel.allocator.buffer(capacity: 0)
                    var tooLarge = false
                    for try await part in inbound {
                        switch part {
                        case .head(let requestHead):
                            state.setBusy(true)
                            head = requestHead
                            body.clear()
                            tooLarge = false
                            if let length = requestHead.headers.first(name: "content-length").flatMap(Int.init), length > maxBodyBytes {
                                tooLarge = true
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
                            if !tooLarge { body.writeBuffer(&chunk) }
                        case .end:
                            guard let request = head else { continue }
                            if tooLarge {
                                try await refuseTooLarge(outbound, allocator: channel.allocator)
                                return
                            }
                            let keepAlive = request.isKeepAlive && !state.isShuttingDown
                            let (status, extra, answer) = await route(request, body: body, allocator: channel.allocator)
                            try await respond(outbound, status: status, headers: extra, body: answer, keepAlive: keepAlive)
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

    private func route(
        _ request: HTTPRequestHead, body: ByteBuffer, allocator: ByteBufferAllocator
    ) async -> (Int, [(String, String)], ByteBuffer) {
        let path = request.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? request.uri
        let json = [("Content-Type", "application/json")]
        switch (request.method, path) {
        case (.POST, "/v1/events"):
            do {
                let outcomes = try await ingest.ingest(body: body)
                if outcomes.isEmpty {
                    ingest.metrics.refused(status: 400)
                    return (400, json, IngestAnswerWriter.error("no_events", "the body holds no event", allocator: allocator))
                }
                return (IngestAnswerWriter.status(of: outcomes), json, IngestAnswerWriter.json(outcomes, allocator: allocator))
            } catch {
                if let full = error.fullAnswer {
                    let message = "\(error); nothing of this request was kept"
                    return (full.status, json + [("Retry-After", String(full.retryAfterSeconds))],
                            IngestAnswerWriter.error("spool_full", message, allocator: allocator))
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
            return (405, json, IngestAnswerWriter.error("method_not_allowed", "\(request.method) is not allowed on \(path)", allocator: allocator))
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

    private func respond(
        _ outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>, status: Int, headers: [(String, String)] = [],
        body: ByteBuffer, keepAlive: Bool
    ) async throws {
        var head = HTTPResponseHead(version: .http1_1, status: HTTPResponseStatus(statusCode: status))
        for (name, value) in headers { head.headers.add(name: name, value: value) }
        head.headers.add(name: "Content-Length", value: String(body.readableBytes))
        if !keepAlive { head.headers.add(name: "Connection", value: "close") }
        try await outbound.write(contentsOf: [.head(head), .body(.byteBuffer(body)), .end(nil)])
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
