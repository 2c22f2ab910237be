public import NIOCore
import NIOHTTP1
public import NIOPosix

/// One HTTP/1.1 response as the agent sent it: status, headers and the whole body.
public struct AgentHTTPResponse: Sendable {
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

/// Why a request to the agent did not get an answer, or got one that means "not kept".
public enum TallyClientError: Error, Sendable, CustomStringConvertible {
    /// No connection, or the connection broke before a whole answer arrived.
    case unreachable(String)
    /// The agent's spool is full: nothing of the request was kept; retry after `retryAfterSeconds`.
    case spoolFull(retryAfterSeconds: Int?, status: Int)
    /// The agent answered with a status the client does not expect.
    case unexpectedStatus(Int, String)
    /// The agent's answer is not the per-event JSON it promises.
    case malformedAnswer(String)
    /// The answer did not arrive in time.
    case timedOut

    public var description: String {
        switch self {
        case .unreachable(let why): "the Tally agent is unreachable: \(why)"
        case .spoolFull(let seconds, let status):
            "the Tally agent's spool is full (HTTP \(status)); retry after \(seconds.map { "\($0) s" } ?? "a while")"
        case .unexpectedStatus(let status, let text): "the Tally agent answered HTTP \(status): \(text.prefix(200))"
        case .malformedAnswer(let why): "the Tally agent's answer is malformed: \(why)"
        case .timedOut: "the Tally agent did not answer in time"
        }
    }
}

/// Plain HTTP/1.1 exchanges with the agent over NIO: one connection per exchange (loopback makes
/// that cheap), `Connection: close`, the whole answer collected.
public struct HTTPExchange: Sendable {
    public var host: String
    public var port: Int
    public var group: any EventLoopGroup
    /// The largest answer body accepted.
    public var maxResponseBytes = 64 << 20

    public init(host: String, port: Int, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.host = host
        self.port = port
        self.group = group
    }

    /// Sends one request and returns the whole answer.
    public func request(
        method: String, path: String, headers: [(String, String)] = [], body: ByteBuffer? = nil, timeout: Duration = .seconds(30)
    ) async throws(TallyClientError) -> AgentHTTPResponse {
        let result: Result<AgentHTTPResponse, TallyClientError> = await withTaskGroup(of: Result<AgentHTTPResponse, TallyClientError>?.self) { group in
            group.addTask {
                do throws(TallyClientError) {
                    return .success(try await exchange(method: method, path: path, headers: headers, body: body))
                } catch {
                    return .failure(error)
                }
            }
            group.addTask {
                do { try await Task.sleep(for: timeout) } catch { return nil }
                return .failure(.timedOut)
            }
            var first: Result<AgentHTTPResponse, TallyClientError> = .failure(.timedOut)
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

    private func exchange(method: String, path: String, headers: [(String, String)], body: ByteBuffer?) async throws(TallyClientError) -> AgentHTTPResponse {
        do {
            let channel = try await ClientBootstrap(group: group)
                .channelOption(.socketOption(.so_reuseaddr), value: 1)
                .connect(host: host, port: port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        return try NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>(wrappingChannelSynchronously: channel)
                    }
                }
            let limit = maxResponseBytes
            let host = self.host
            return try await channel.executeThenClose { inbound, outbound in
                var head = HTTPRequestHead(version: .http1_1, method: HTTPMethod(rawValue: method), uri: path)
                head.headers.add(name: "Host", value: host)
                head.headers.add(name: "Connection", value: "close")
                for (name, value) in headers { head.headers.add(name: name, value: value) }
                head.headers.add(name: "Content-Length", value: String(body?.readableBytes ?? 0))
                try await outbound.write(.head(head))
                if let body, body.readableBytes > 0 { try await outbound.write(.body(.byteBuffer(body))) }
                try await outbound.write(.end(nil))
                var response: AgentHTTPResponse?
                for try await part in inbound {
                    switch part {
                    case .head(let head):
                        response = AgentHTTPResponse(
                            status: Int(head.status.code), headers: head.headers.map { (name: $0.name.lowercased(), value: $0.value) }, body: ByteBuffer())
                    case .body(var chunk):
                        guard (response?.body.readableBytes ?? 0) + chunk.readableBytes <= limit else {
                            throw TallyClientError.malformedAnswer("the answer is larger than \(limit) bytes")
                        }
                        response?.body.writeBuffer(&chunk)
                    case .end:
                        if let response { return response }
                        throw TallyClientError.malformedAnswer("an answer without a head")
                    }
                }
                throw TallyClientError.unreachable("the connection closed before the answer was complete")
            }
        } catch let error as TallyClientError {
            throw error
        } catch {
            throw .unreachable("\(host):\(port): \(error)")
        }
    }
}
