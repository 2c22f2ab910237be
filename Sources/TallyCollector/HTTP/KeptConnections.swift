import HummingbirdCore
import Logging
import NIOCore
import TallyService

/// Hummingbird's HTTP/1 child channel, with each connection's `NIOAsyncChannel` kept until its
/// channel closes and finished then.
///
/// Hummingbird's accept loop has the race of Tally's own listeners (see `AcceptedConnections`):
/// a connection accepted while the server stops (a cancelled iterator, or an initializer still
/// running when the listener closed) is dropped unused, and swift-nio stops the process
/// ("Deinited NIOAsyncWriter without calling finish()", apple/swift-nio#3481) — seen in a test
/// run stopping an in-process collector. Kept here, such a connection stays open until its
/// client closes it or the process exits, instead of taking the process down.
struct KeptHTTP1Channel: ServerChildChannel {
    typealias Value = HTTP1Channel.Value
    let base: HTTP1Channel

    static func builder(configuration: HTTP1Channel.Configuration = .init()) -> HTTPServerBuilder {
        HTTPServerBuilder { responder in KeptHTTP1Channel(base: HTTP1Channel(responder: responder, configuration: configuration)) }
    }

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        base.setup(channel: channel, logger: logger).map { connection in
            AcceptedConnections.keepUntilClosed(connection)
            return connection
        }
    }

    func handle(value: Value, logger: Logger) async { await base.handle(value: value, logger: logger) }
}
