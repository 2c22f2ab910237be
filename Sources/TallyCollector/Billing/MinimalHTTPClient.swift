import NIOCore
public import NIOHTTP1
import NIOPosix
import TallyConfig
public import TallyTLS

/// A minimal HTTP/1.1 client on NIO (one request per connection, `Connection: close`), for
/// exports to billing platforms and `tallyctl`: Tally's one HTTP client.
///
/// `https://` URLs go over TLS (NIOSSL), the server's certificate checked against the given
/// ``ClientTLS`` or else the system's trust store, and its name against the URL's host.
/// `http://` is for loopback: to any other peer the connection is closed before the request is
/// written, unless `allowPlaintextRemote` is set.
///
/// Why not async-http-client: a request per export record and per `tallyctl` call needs no pool,
/// redirects or streaming, and this keeps the dependency graph (and build time) small; TLS comes
/// from the same NIOSSL contexts as the agent protocol's.
public enum MinimalHTTPClient {
    /// A response: status code and body text.
    public struct Reply: Sendable {
        public var status: Int
        public var body: String
    }

    /// Why a request got no HTTP answer; `cause` is the underlying error (TLS, connect, I/O).
    public struct Failure: Error, CustomStringConvertible {
        public var message: String
        public var cause: (any Error)?

        public init(_ message: String, cause: (any Error)? = nil) {
            self.message = message
            self.cause = cause
        }

        public var description: String { message + (cause.map { ": \($0)" } ?? "") }
    }

    /// The parts of an `http://` or `https://` URL.
    public struct Target: Sendable, Hashable {
        public var secure: Bool
        public var host: String
        public var port: Int
        public var path: String
    }

    /// Splits `http(s)://host:port/path` into its parts.
    public static func parse(url: String) throws(Failure) -> Target {
        let secure: Bool
        let rest: Substring
        if url.hasPrefix("https://") {
            secure = true
            rest = url.dropFirst("https://".count)
        } else if url.hasPrefix("http://") {
            secure = false
            rest = url.dropFirst("http://".count)
        } else {
            throw Failure("'\(url)' must start with https:// (or http:// for loopback)")
        }
        let hostPort = rest.prefix { $0 != "/" }
        let path = rest.dropFirst(hostPort.count)
        var host = Substring(hostPort)
        var portText: Substring?
        if hostPort.hasPrefix("["), let close = hostPort.firstIndex(of: "]") {
            host = hostPort[hostPort.index(after: hostPort.startIndex)..<close]
            let after = hostPort[hostPort.index(after: close)...]
            if after.hasPrefix(":") { portText = after.dropFirst() } else if !after.isEmpty { throw Failure("'\(url)' has a bad host") }
        } else if let colon = hostPort.lastIndex(of: ":") {
            host = hostPort[..<colon]
            portText = hostPort[hostPort.index(after: colon)...]
        }
        guard !host.isEmpty else { throw Failure("'\(url)' has no host") }
        var port = secure ? 443 : 80
        if let portText {
            guard let value = Int(portText), (1...65535).contains(value) else { throw Failure("'\(url)' has a bad port") }
            port = value
        }
        return Target(secure: secure, host: String(host), port: port, path: path.isEmpty ? "/" : String(path))
    }

    /// The TLS of `https://` requests given no ``ClientTLS``: the system's trust store, made once.
    static let systemTrust: Result<ClientTLS, TLSSetupError> = Result { () throws(TLSSetupError) in
        try ClientTLS(ClientTLSFiles(), place: "the system trust store")
    }

    /// Sends one request and reads the whole answer.
    public static func request(
        method: HTTPMethod, url: String, headers: [(String, String)] = [], body: String? = nil, tls: ClientTLS? = nil,
        allowPlaintextRemote: Bool = false
    ) async throws -> Reply {
        let target = try parse(url: url)
        var clientTLS: ClientTLS?
        if target.secure {
            if let tls { clientTLS = tls } else { clientTLS = try systemTrust.get() }
        }
        let channel: NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>
        let handshake: EventLoopFuture<Void>?
        do {
            (channel, handshake) = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(.seconds(5))
                .connect(host: target.host, port: target.port) { [clientTLS] channel in
                    channel.eventLoop.makeCompletedFuture {
                        let handshake = try clientTLS?.addHandlers(to: channel.pipeline.syncOperations, host: target.host)
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        return (
                            try NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>(wrappingChannelSynchronously: channel),
                            handshake
                        )
                    }
                }
        } catch {
            throw Failure("\(url): cannot connect", cause: error)
        }
        if let handshake {
            do {
                try await handshake.get()
            } catch {
                try? await channel.channel.close()
                throw Failure("\(url): TLS failed", cause: error)
            }
        }
        if !target.secure, !allowPlaintextRemote, !(channel.channel.remoteAddress.map(PeerAddress.isLoopback) ?? false) {
            try? await channel.channel.close()
            throw Failure("\(url): plain HTTP is for loopback only; use https:// (or allow plain HTTP to remote hosts explicitly)")
        }
        do {
            return try await channel.executeThenClose { inbound, outbound in
                var head = HTTPRequestHead(version: .http1_1, method: method, uri: target.path)
                let defaultPort = target.secure ? 443 : 80
                let hostName = target.host.contains(":") ? "[\(target.host)]" : target.host
                head.headers.add(name: "Host", value: target.port == defaultPort ? hostName : "\(hostName):\(target.port)")
                head.headers.add(name: "Connection", value: "close")
                for (name, value) in headers { head.headers.add(name: name, value: value) }
                if let body { head.headers.add(name: "Content-Length", value: String(body.utf8.count)) }
                try await outbound.write(.head(head))
                if let body { try await outbound.write(.body(.byteBuffer(ByteBuffer(string: body)))) }
                try await outbound.write(.end(nil))
                var status = 0
                var text = ""
                for try await part in inbound {
                    switch part {
                    case .head(let response): status = Int(response.status.code)
                    case .body(let buffer): text += String(buffer: buffer)
                    case .end: return Reply(status: status, body: text)
                    }
                }
                throw Failure("\(url): the connection closed before the answer ended")
            }
        } catch let error as Failure {
            throw error
        } catch {
            throw Failure("\(url): no answer", cause: error)
        }
    }
}
