public import NIOCore
import NIOHTTP1
public import NIOPosix

/// Tally's one HTTP client: HTTP/1.1 over NIO, one connection per exchange, `Connection: close`,
/// the whole answer collected (a `Content-Length` or chunked body, up to ``maxResponseBytes``).
/// `TallyClient` sends events to the agent with it; the collector's exports to billing platforms
/// and `tallyctl`'s reads of the collector's API use it too, over TLS.
///
/// Security is pluggable (``HTTPConnectionSecurity``), so this module needs no TLS library:
/// without one the exchange is plain HTTP to any peer (the agent on this host); TallyTLS
/// supplies TLS (`ClientTLS`) and the plain-TCP rule, loopback only unless allowed
/// (`PlaintextPolicy`), and ``init(url:tls:allowPlaintextRemote:)`` picks one from a URL.
///
/// Why not async-http-client (already built for the tests, through HummingbirdTesting): the
/// plain-TCP rule needs the connected peer's address before the request is written, which it
/// has no hook for (a host-name check is not the same: a name may resolve off the host); TLS
/// would need its own contexts instead of the `NIOSSLContext`s the agent protocol already
/// makes; and every program embedding TallyClient, and the three binaries, would carry it with
/// swift-nio-http2, swift-nio-extras and swift-nio-transport-services. An exchange per event
/// batch, export record or `tallyctl` call needs no pool, redirects, HTTP/2 or streaming.
public struct HTTPExchange: Sendable {
    public var host: String
    public var port: Int
    /// How the connection is secured; nil: plain HTTP to any peer.
    public var security: (any HTTPConnectionSecurity)?
    public var group: any EventLoopGroup
    /// The largest answer body accepted.
    public var maxResponseBytes = 64 << 20
    /// How long connecting may take (within the request's timeout).
    public var connectTimeout: Duration = .seconds(5)

    public init(
        host: String, port: Int, security: (any HTTPConnectionSecurity)? = nil,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) {
        self.host = host
        self.port = port
        self.security = security
        self.group = group
    }

    /// `host:port` as written in a URL and in errors (an IPv6 address in brackets).
    public var server: String { Target.hostText(host) + ":\(port)" }

    /// Sends one request and returns the whole answer, or throws when no whole answer arrived
    /// within `timeout` (connecting and any TLS handshake included).
    public func request(
        method: String, path: String, headers: [(String, String)] = [], body: ByteBuffer? = nil, timeout: Duration = .seconds(30)
    ) async throws(HTTPExchangeError) -> Response {
        let result: Result<Response, HTTPExchangeError> = await withTaskGroup(of: Result<Response, HTTPExchangeError>?.self) { group in
            group.addTask {
                do throws(HTTPExchangeError) {
                    return .success(try await exchange(method: method, path: path, headers: headers, body: body, timeout: timeout))
                } catch {
                    return .failure(error)
                }
            }
            group.addTask {
                do { try await Task.sleep(for: timeout) } catch { return nil }
                return .failure(.timedOut(server: server, after: timeout))
            }
            var first: Result<Response, HTTPExchangeError> = .failure(.timedOut(server: server, after: timeout))
            while let next = await group.next() {
                if let next {
                    first = next
                    break
                }
            }
            group.cancelAll()
            return first
        }
        return try result.get()
    }

    /// The request's head: `Host` (with the port unless it is the scheme's), `Connection: close`,
    /// the caller's headers, and `Content-Length` for a body (or a method that carries one).
    func head(method: String, path: String, headers: [(String, String)], bodyBytes: Int?) -> HTTPRequestHead {
        var head = HTTPRequestHead(version: .http1_1, method: HTTPMethod(rawValue: method), uri: path)
        let defaultPort = security?.isEncrypted == true ? 443 : 80
        head.headers.add(name: "Host", value: port == defaultPort ? Target.hostText(host) : server)
        head.headers.add(name: "Connection", value: "close")
        for (name, value) in headers { head.headers.add(name: name, value: value) }
        if let bodyBytes {
            head.headers.add(name: "Content-Length", value: String(bodyBytes))
        } else if method != "GET" && method != "HEAD" {
            head.headers.add(name: "Content-Length", value: "0")
        }
        return head
    }

    private func exchange(
        method: String, path: String, headers: [(String, String)], body: ByteBuffer?, timeout: Duration
    ) async throws(HTTPExchangeError) -> Response {
        let security = self.security
        let host = self.host
        let server = self.server
        let channel: NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>
        let handshake: EventLoopFuture<Void>?
        do {
            (channel, handshake) = try await ClientBootstrap(group: group)
                .channelOption(.socketOption(.so_reuseaddr), value: 1)
                .connectTimeout(TimeAmount(min(connectTimeout, timeout)))
                .connect(host: host, port: port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let handshake = try security?.secure(channel.pipeline.syncOperations, host: host)
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        return (
                            try NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>(wrappingChannelSynchronously: channel),
                            handshake
                        )
                    }
                }
        } catch {
            throw .cannotConnect(server: server, cause: error)
        }
        do {
            try await handshake?.get()
            try security?.admit(peer: channel.channel.remoteAddress)
        } catch {
            try? await channel.channel.close()
            throw .refused(server: server, cause: error)
        }
        let limit = maxResponseBytes
        let head = head(method: method, path: path, headers: headers, bodyBytes: body?.readableBytes)
        do {
            return try await channel.executeThenClose { inbound, outbound in
                // The whole request in one write: a server answers a GET once its head arrives
                // and may close at once (`Connection: close`), so a part written after an await
                // could find the channel closed. And a failed write ends nothing yet: an answer
                // that came before the close (an early 413 while the body was on its way) is
                // read and returned; the write's error is the cause when none came. Under CPU
                // load, one in ten requests failed "I/O on closed channel" with the answer
                // already there, when the end of the request was written after the head.
                var parts: [HTTPClientRequestPart] = [.head(head)]
                if let body, body.readableBytes > 0 { parts.append(.body(.byteBuffer(body))) }
                parts.append(.end(nil))
                var writeError: (any Error)?
                do { try await outbound.write(contentsOf: parts) } catch { writeError = error }
                var response: Response?
                for try await part in inbound {
                    switch part {
                    case .head(let head):
                        response = Response(
                            status: Int(head.status.code), headers: head.headers.map { (name: $0.name.lowercased(), value: $0.value) },
                            body: ByteBuffer())
                    case .body(var chunk):
                        guard (response?.body.readableBytes ?? 0) + chunk.readableBytes <= limit else {
                            throw HTTPExchangeError.answerTooLarge(server: server, limit: limit)
                        }
                        response?.body.writeBuffer(&chunk)
                    case .end:
                        if let response { return response }
                        throw HTTPExchangeError.noAnswer(server: server, cause: writeError)
                    }
                }
                throw HTTPExchangeError.noAnswer(server: server, cause: writeError)
            }
        } catch let error as HTTPExchangeError {
            throw error
        } catch {
            throw .noAnswer(server: server, cause: error)
        }
    }
}

extension HTTPExchange {
    /// One HTTP/1.1 answer: status, headers and the whole body.
    public struct Response: Sendable {
        public var status: Int
        /// Header names in lowercase, with their values.
        public var headers: [(name: String, value: String)]
        public var body: ByteBuffer

        /// The first value of a header (case-insensitive name).
        public func header(_ name: String) -> String? {
            let lowered = name.lowercased()
            return headers.first { $0.name == lowered }?.value
        }

        /// The body as UTF-8 text.
        public var text: String { String(buffer: body) }
    }

    /// The parts of an `http://` or `https://` URL.
    public struct Target: Sendable, Hashable {
        public var secure: Bool
        public var host: String
        public var port: Int
        /// The path and query, `/` when the URL has none.
        public var path: String

        public init(secure: Bool, host: String, port: Int, path: String) {
            self.secure = secure
            self.host = host
            self.port = port
            self.path = path
        }

        /// Splits `http(s)://host[:port][/path]`; an IPv6 address goes in brackets.
        public init(url: String) throws(HTTPExchangeError) {
            let rest: Substring
            if url.hasPrefix("https://") {
                secure = true
                rest = url.dropFirst("https://".count)
            } else if url.hasPrefix("http://") {
                secure = false
                rest = url.dropFirst("http://".count)
            } else {
                throw .badURL(url, problem: "must start with https:// (or http:// for loopback)")
            }
            let hostPort = rest.prefix { $0 != "/" && $0 != "?" }
            let path = rest.dropFirst(hostPort.count)
            var host = Substring(hostPort)
            var portText: Substring?
            if hostPort.hasPrefix("["), let close = hostPort.firstIndex(of: "]") {
                host = hostPort[hostPort.index(after: hostPort.startIndex)..<close]
                let after = hostPort[hostPort.index(after: close)...]
                if after.hasPrefix(":") {
                    portText = after.dropFirst()
                } else if !after.isEmpty {
                    throw .badURL(url, problem: "has a bad host")
                }
            } else if let colon = hostPort.lastIndex(of: ":") {
                host = hostPort[..<colon]
                portText = hostPort[hostPort.index(after: colon)...]
            }
            guard !host.isEmpty else { throw .badURL(url, problem: "has no host") }
            port = secure ? 443 : 80
            if let portText {
                guard let value = Int(portText), (1...65535).contains(value) else { throw .badURL(url, problem: "has a bad port") }
                port = value
            }
            self.host = String(host)
            self.path = path.isEmpty ? "/" : (path.hasPrefix("?") ? "/" + path : String(path))
        }

        /// A host as written in a URL or a `Host` header: an IPv6 address in brackets.
        static func hostText(_ host: String) -> String { host.contains(":") ? "[\(host)]" : host }
    }
}

/// What an ``HTTPExchange`` does to a connection before it writes a request: secures it (TLS,
/// whose handshake it then awaits) and decides whether the peer connected to may have it.
/// TallyTLS conforms `ClientTLS` and `PlaintextPolicy` to it.
public protocol HTTPConnectionSecurity: Sendable {
    /// Whether the connection is encrypted (`https`, default port 443) or not (`http`, 80).
    var isEncrypted: Bool { get }

    /// Called in the channel initializer, before the HTTP handlers: adds what secures a
    /// connection to `host` and returns the handshake's outcome (nil: nothing to wait for).
    func secure(_ pipeline: ChannelPipeline.SynchronousOperations, host: String) throws -> EventLoopFuture<Void>?

    /// Called once connected, after any handshake and before anything is written: throws to
    /// refuse `peer` (nil when the address is unknown).
    func admit(peer: SocketAddress?) throws
}

/// Why an ``HTTPExchange`` got no whole answer; `cause` is the underlying error (the resolver's,
/// the socket's, the TLS library's) where there is one.
public enum HTTPExchangeError: Error, CustomStringConvertible {
    /// The URL is not `http(s)://host[:port][/path]`.
    case badURL(String, problem: String)
    /// No connection (refused, a name that does not resolve, the connect timeout).
    case cannotConnect(server: String, cause: any Error)
    /// Connected, but the connection's security refused it: a TLS handshake that failed (a
    /// certificate that does not verify), or plain HTTP to a peer not on loopback.
    case refused(server: String, cause: any Error)
    /// The connection broke before a whole answer arrived.
    case noAnswer(server: String, cause: (any Error)?)
    /// The answer's body is larger than ``HTTPExchange/maxResponseBytes``.
    case answerTooLarge(server: String, limit: Int)
    /// No whole answer within the request's timeout.
    case timedOut(server: String, after: Duration)

    public var description: String {
        switch self {
        case .badURL(let url, let problem): "'\(url)' \(problem)"
        case .cannotConnect(let server, let cause): "cannot connect to \(server): \(cause)"
        case .refused(let server, let cause): "\(server): \(cause)"
        case .noAnswer(let server, let cause):
            "\(server) closed the connection before the answer was complete" + (cause.map { ": \($0)" } ?? "")
        case .answerTooLarge(let server, let limit): "\(server) answered with more than \(limit) bytes"
        case .timedOut(let server, let after): "\(server) did not answer within \(after)"
        }
    }
}
