import NIOCore
public import NIOHTTP1
import NIOPosix

/// A minimal HTTP/1.1 client on NIO (one request per connection, `Connection: close`), for
/// exports and `tallyctl`. Plain HTTP only: put TLS in front (a local proxy) for remote platforms.
public enum PlainHTTPClient {
    /// A response: status code and body text.
    public struct Reply: Sendable {
        public var status: Int
        public var body: String
    }

    /// Why a request got no HTTP answer.
    public struct Failure: Error, Sendable, CustomStringConvertible {
        public var description: String
    }

    /// Splits `http://host:port/path` into its parts.
    public static func parse(url: String) throws(Failure) -> (host: String, port: Int, path: String) {
        guard url.hasPrefix("http://") else { throw Failure(description: "'\(url)' must start with http://") }
        let rest = url.dropFirst("http://".count)
        let hostPort = rest.prefix { $0 != "/" }
        let path = rest.dropFirst(hostPort.count)
        let parts = hostPort.split(separator: ":", maxSplits: 1)
        guard let host = parts.first, !host.isEmpty else { throw Failure(description: "'\(url)' has no host") }
        var port = 80
        if parts.count == 2 {
            guard let value = Int(parts[1]), (1...65535).contains(value) else { throw Failure(description: "'\(url)' has a bad port") }
            port = value
        }
        return (String(host), port, path.isEmpty ? "/" : String(path))
    }

    /// Sends one request and reads the whole answer.
    public static func request(
        method: HTTPMethod, url: String, headers: [(String, String)] = [], body: String? = nil
    ) async throws -> Reply {
        let (host, port, path) = try parse(url: url)
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(.seconds(5))
            .connect(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    return try NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>(wrappingChannelSynchronously: channel)
                }
            }
        return try await channel.executeThenClose { inbound, outbound in
            var head = HTTPRequestHead(version: .http1_1, method: method, uri: path)
            head.headers.add(name: "Host", value: "\(host):\(port)")
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
            throw Failure(description: "\(url): the connection closed before the answer ended")
        }
    }
}
