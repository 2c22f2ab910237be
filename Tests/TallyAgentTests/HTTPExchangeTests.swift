import Hummingbird
import HummingbirdTesting
import NIOCore
import NIOPosix
import TallyClient
import TallyTestSupport
import Testing

/// Tally's one HTTP client against real loopback servers: answers framed by Content-Length and
/// chunked, request headers and bodies, the size limit, and a server that never answers.
@Suite("HTTPExchange on loopback")
struct HTTPExchangeTests {
    static func application() -> some ApplicationProtocol {
        let router = Router()
        router.get("fixed") { _, _ in "hello" }
        router.get("chunked") { _, _ -> Response in
            Response(
                status: .ok,
                body: ResponseBody { writer in
                    for part in ["one,", "two,", "three"] { try await writer.write(ByteBuffer(string: part)) }
                    try await writer.finish(nil)
                })
        }
        router.post("echo") { request, _ -> Response in
            let body = try await request.body.collect(upTo: 1 << 20)
            let marker = request.headers[.init("X-Marker")!] ?? "none"
            return Response(
                status: .created, headers: [.init("X-Marker-Seen")!: marker, .contentType: "text/plain"],
                body: ResponseBody(byteBuffer: body))
        }
        return Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)))
    }

    @Test func readsLengthFramedAndChunkedAnswersAndSendsHeadersAndBody() async throws {
        try await Self.application().test(.live) { client in
            let exchange = HTTPExchange(host: "127.0.0.1", port: try #require(client.port))
            let fixed = try await exchange.request(method: "GET", path: "/fixed")
            #expect(fixed.status == 200 && fixed.text == "hello")
            #expect(fixed.header("Content-Length") == "5")
            let chunked = try await exchange.request(method: "GET", path: "/chunked")
            #expect(chunked.status == 200 && chunked.text == "one,two,three")
            #expect(chunked.header("transfer-encoding") == "chunked")
            let echo = try await exchange.request(
                method: "POST", path: "/echo", headers: [("X-Marker", "m-7")], body: ByteBuffer(string: "tenant=acme&value=4"))
            #expect(echo.status == 201 && echo.text == "tenant=acme&value=4")
            #expect(echo.header("x-marker-seen") == "m-7")
            let missing = try await exchange.request(method: "GET", path: "/nope")
            #expect(missing.status == 404)

            var small = exchange
            small.maxResponseBytes = 4
            do throws(HTTPExchangeError) {
                _ = try await small.request(method: "GET", path: "/fixed")
                Issue.record("a 5-byte answer passed a 4-byte limit")
            } catch {
                guard case .answerTooLarge(_, let limit) = error else {
                    Issue.record("expected answerTooLarge, got \(error)")
                    return
                }
                #expect(limit == 4)
            }
        }
    }

    @Test func aServerThatNeverAnswersTimesOut() async throws {
        // Accepts connections and reads nothing: the request is never answered.
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in channel.eventLoop.makeSucceededVoidFuture() }
            .bind(host: "127.0.0.1", port: 0).get()
        let port = try #require(server.localAddress?.port)
        let exchange = HTTPExchange(host: "127.0.0.1", port: port)
        do throws(HTTPExchangeError) {
            _ = try await exchange.request(method: "GET", path: "/", timeout: .milliseconds(300))
            Issue.record("a server that never answers was answered")
        } catch {
            guard case .timedOut(_, let after) = error else {
                Issue.record("expected timedOut, got \(error)")
                return
            }
            #expect(after == .milliseconds(300))
        }
        try await server.close()
    }

    @Test func aClosedPortCannotConnect() async throws {
        let dead = try DeadPort()
        defer { dead.close() }
        do throws(HTTPExchangeError) {
            _ = try await HTTPExchange(host: "127.0.0.1", port: dead.port).request(method: "GET", path: "/healthz")
            Issue.record("a closed port answered")
        } catch {
            guard case .cannotConnect(let server, _) = error else {
                Issue.record("expected cannotConnect, got \(error)")
                return
            }
            #expect(server == "127.0.0.1:\(dead.port)")
        }
    }
}
