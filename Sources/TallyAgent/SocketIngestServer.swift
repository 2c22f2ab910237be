public import Logging
import NIOCore
import NIOPosix
public import ServiceLifecycle
import TallyCore
import TallyService
import TallySpool

/// NDJSON streams on a Unix domain socket: the fastest way into the agent.
///
/// Protocol. The client writes events as JSON, one per line (`\n`-terminated; a trailing `\r`
/// and blank lines are ignored). The agent answers every non-blank line with exactly one line,
/// in the same order, and only once that event is durable in the spool:
///
/// ```
/// ok <fingerprint: 32 hex digits>
/// err <reason> <field, or - when none> <message to the end of the line>
/// full <retry-after seconds> <message>      the spool is full; this line was NOT kept: resend it
/// ```
///
/// `reason` is one of Tally's rejection reasons (`malformed`, `missing_field`, `invalid_field`,
/// `unknown_field`, `limit_exceeded`, `future_timestamp`, ...). Lines that arrive together are
/// kept with one spool append (and share one fsync), so a client that streams without waiting
/// for answers gets the most throughput; answers still come back in order. A line longer than
/// `maxLineBytes` is answered `err limit_exceeded - ...` (and counted as a rejected event) and
/// the connection is closed. When the client half-closes, the last line (even without `\n`) is
/// answered and then the agent closes.
public struct SocketIngestServer: Service {
    let path: String
    let ingest: EventIngest
    let maxLineBytes: Int
    let logger: Logger
    let onBound: @Sendable () -> Void

    /// `onBound` is called once the socket is listening.
    public init(
        path: String, ingest: EventIngest, maxLineBytes: Int = 1 << 20, logger: Logger, onBound: @escaping @Sendable () -> Void = {}
    ) {
        self.path = path
        self.ingest = ingest
        self.maxLineBytes = maxLineBytes
        self.logger = logger
        self.onBound = onBound
    }

    public func run() async throws {
        let accepted = AcceptedConnections()
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try accepted.wrap(channel) as NIOAsyncChannel<ByteBuffer, ByteBuffer>
                }
            }
        logger.info("NDJSON socket listening", metadata: ["path": "\(path)"])
        onBound()
        try await AcceptLoop.run(server, accepted: accepted) { connection in await serve(connection) }
    }

    /// Chunks of one connection whose answers may be awaited at once: the next chunk is decoded
    /// and queued for the spool while the previous one's fsync runs (the group commit shares it).
    static let maxChunksInFlight = 8

    private func serve(_ connection: NIOAsyncChannel<ByteBuffer, ByteBuffer>) async {
        let channel = connection.channel
        await withGracefulShutdownHandler {
            do {
                try await connection.executeThenClose { inbound, outbound in
                    let (answers, answerQueue) = AsyncStream.makeStream(of: EventLoopFuture<ByteBuffer>.self)
                    try await withThrowingTaskGroup(of: Void.self) { group in
                        // The writer: answers in the order the chunks came, each once durable.
                        group.addTask {
                            for await answer in answers { try await outbound.write(try await answer.get()) }
                        }
                        defer { answerQueue.finish() }
                        var inFlight: [EventLoopFuture<ByteBuffer>] = []
                        func send(_ answer: EventLoopFuture<ByteBuffer>) async {
                            answerQueue.yield(answer)
                            inFlight.append(answer)
                            if inFlight.count >= Self.maxChunksInFlight { _ = try? await inFlight.removeFirst().get() }
                        }
                        var pending = channel.allocator.buffer(capacity: 0)
                        for try await var chunk in inbound {
                            pending.writeBuffer(&chunk)
                            guard let lastNewline = pending.readableBytesView.lastIndex(of: 0x0A) else {
                                if pending.readableBytes > maxLineBytes {
                                    await send(channel.eventLoop.makeSucceededFuture(tooLong()))
                                    return
                                }
                                continue
                            }
                            let length = lastNewline - pending.readerIndex + 1
                            guard let lines = pending.readSlice(length: length) else { continue }
                            await send(answer(lines, channel: channel))
                            if pending.readableBytes > maxLineBytes {
                                await send(channel.eventLoop.makeSucceededFuture(tooLong()))
                                return
                            }
                            if pending.readerIndex > 1 << 16 { pending.discardReadBytes() }
                        }
                        if pending.readableBytes > 0 { await send(answer(pending, channel: channel)) }
                    }
                }
            } catch {
                logger.debug("socket connection ended", metadata: ["error": "\(error)"])
            }
        } onGracefulShutdown: {
            // Lines already read are answered by the loop; the peer sees the close.
            channel.close(mode: .input, promise: nil)
        }
    }

    /// The answer to a line over the limit, counted as a received and rejected event.
    private func tooLong() -> ByteBuffer {
        ingest.metrics.received.increment()
        ingest.metrics.rejected(RejectionReason.limitExceeded.rawValue)
        var out = ByteBuffer()
        out.writeString("err limit_exceeded - a line is longer than \(maxLineBytes) bytes; closing\n")
        return out
    }

    /// Decodes every line of `lines` and queues the valid events for the spool now; the future
    /// gives one answer line per line, once the events are durable.
    private func answer(_ lines: ByteBuffer, channel: any Channel) -> EventLoopFuture<ByteBuffer> {
        let now = EventTime.now()
        let (outcomes, kept) = lines.withUnsafeReadableBytes { raw in
            ingest.submit(lines: raw.bindMemory(to: UInt8.self), now: now, on: channel.eventLoop)
        }
        let allocator = channel.allocator
        return kept.map {
            var out = allocator.buffer(capacity: outcomes.count * 36)
            for outcome in outcomes {
                switch outcome {
                case .accepted(let fingerprint):
                    out.writeString("ok ")
                    out.writeFingerprintHex(fingerprint)
                    out.writeInteger(UInt8(ascii: "\n"))
                case .rejected(let rejection):
                    out.writeString(Self.errLine(rejection))
                }
            }
            return out
        }.recover { error in
            let spoolError = error as? SpoolError
            let seconds = spoolError?.fullAnswer?.retryAfterSeconds ?? 1
            let message = Self.oneLine("\(error); not kept")
            let word = spoolError?.fullAnswer == nil ? "full \(seconds) spool error: " : "full \(seconds) "
            var out = allocator.buffer(capacity: outcomes.count * 40)
            for outcome in outcomes {
                // Rejections stay rejections; only valid events are "not kept, resend".
                switch outcome {
                case .rejected(let rejection): out.writeString(Self.errLine(rejection))
                case .accepted: out.writeString(word + message + "\n")
                }
            }
            return out
        }
    }

    static func errLine(_ rejection: EventRejection) -> String {
        let field = rejection.field.map { $0.isEmpty || $0.contains(" ") ? "-" : $0 } ?? "-"
        return "err \(rejection.reason.rawValue) \(field) \(oneLine(rejection.message))\n"
    }

    static func oneLine(_ text: String) -> String {
        String(text.map { $0 == "\n" || $0 == "\r" ? " " : $0 })
    }
}
