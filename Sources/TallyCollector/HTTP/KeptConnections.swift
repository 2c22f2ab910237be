import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
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
///
/// With `directReads`, each connection also gets a ``DirectReads`` handler in front of
/// Hummingbird's, right after NIO's HTTP/1 request decoder.
struct KeptHTTP1Channel: ServerChildChannel {
    typealias Value = HTTP1Channel.Value
    let base: HTTP1Channel
    var directReads: DirectReads.Reader?

    static func builder(configuration: HTTP1Channel.Configuration = .init(), directReads: DirectReads.Reader? = nil) -> HTTPServerBuilder {
        HTTPServerBuilder { responder in
            KeptHTTP1Channel(base: HTTP1Channel(responder: responder, configuration: configuration), directReads: directReads)
        }
    }

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        base.setup(channel: channel, logger: logger).flatMapThrowing { [directReads] connection in
            AcceptedConnections.keepUntilClosed(connection)
            if let directReads {
                let pipeline = channel.pipeline.syncOperations
                let decoder = try pipeline.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)
                try pipeline.addHandler(DirectReads(reader: directReads), position: .after(decoder))
            }
            return connection
        }
    }

    func handle(value: Value, logger: Logger) async { await base.handle(value: value, logger: logger) }
}
