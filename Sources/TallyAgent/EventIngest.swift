public import NIOCore
public import TallyCore
public import TallySpool

/// The one way events enter the agent, for HTTP and the Unix socket alike: decode and validate
/// each event, fingerprint the valid ones, append them to the spool, and answer per event only
/// once the append is durable. A rejected event costs only itself.
///
/// Guarantees: an outcome of ``EventIngest/Outcome/accepted(_:)`` is given only after the spool's
/// append returned (durable per its fsync policy). If the spool refuses the append (full), the
/// whole call throws and nothing of it was kept: the caller answers 429/503 with `Retry-After`.
public struct EventIngest: Sendable {
    /// What happened to one event.
    public enum Outcome: Sendable, Hashable {
        case accepted(Fingerprint)
        case rejected(EventRejection)
    }

    public let spool: Spool
    public let decoder: EventDecoder
    public let metrics: AgentMetrics
    /// Called after every durable append (wakes the shipper).
    let appended: @Sendable () -> Void

    public init(spool: Spool, decoder: EventDecoder, metrics: AgentMetrics, appended: @escaping @Sendable () -> Void = {}) {
        self.spool = spool
        self.decoder = decoder
        self.metrics = metrics
        self.appended = appended
    }

    /// Decodes a request body (object, array or NDJSON) and keeps its valid events durably.
    /// `arrival`: the spool was told of this request when its head was read (it ends here).
    public func ingest(body: ByteBuffer, arrival: SpoolArrival? = nil) async throws(SpoolError) -> [Outcome] {
        let now = EventTime.now()
        if let lines = body.withUnsafeReadableBytes({ raw in encodeNDJSON(raw.bindMemory(to: UInt8.self), now: now) }) {
            // NDJSON whose first line has the common shape: straight from the bytes.
            if let failure = lines.failure {
                arrival?.end()
                metrics.refused(status: failure == .rejectedFull ? 429 : 503)
                throw failure
            }
            guard lines.batch.count > 0 else {
                arrival?.end()
                return lines.outcomes
            }
            let start = ContinuousClock.now
            do throws(SpoolError) {
                if let arrival {
                    try await spool.append(lines.batch, arrival: arrival)
                } else {
                    let result: Result<SpoolPosition, SpoolError> = await withCheckedContinuation { continuation in
                        spool.append(lines.batch) { continuation.resume(returning: $0) }
                    }
                    _ = try result.get()
                }
            } catch {
                metrics.refused(status: error == .rejectedFull ? 429 : 503)
                throw error
            }
            kept(lines.batch.count, since: start)
            return lines.outcomes
        }
        let results = body.withUnsafeReadableBytes { raw in
            decoder.decodeBody(raw.bindMemory(to: UInt8.self), now: now)
        }
        return try await keep(results, arrival: arrival)
    }

    /// A body's lines as ``encode(lines:now:)`` reads them, when the body is NDJSON whose first
    /// line has the common shape (``EventDecoder/scanPlain(_:now:into:)``); nil otherwise, and
    /// then ``EventDecoder/decodeBody(_:now:)`` decides what the body is. When the first line is
    /// plain, that decoder reads the body line by line as well (a whole value followed by more is
    /// NDJSON; one followed by nothing is that line alone), so both ways give the same outcomes.
    private func encodeNDJSON(_ body: UnsafeBufferPointer<UInt8>, now: EventTime) -> EncodedLines? {
        var plain = PlainEvent()
        var firstIsPlain: Bool?
        forEachLine(body) { line in
            if firstIsPlain == nil { firstIsPlain = decoder.scanPlain(line, now: now, into: &plain) }
        }
        guard firstIsPlain == true else { return nil }
        return encode(lines: body, now: now)
    }

    /// Keeps the valid events of already-decoded results, in order.
    public func keep(_ results: [Result<UsageEvent, EventRejection>], arrival: SpoolArrival? = nil) async throws(SpoolError) -> [Outcome] {
        let (events, outcomes) = prepare(results)
        if events.isEmpty { arrival?.end() }
        if !events.isEmpty {
            let start = ContinuousClock.now
            do {
                if let arrival {
                    try await spool.append(events, arrival: arrival)
                } else {
                    try await spool.append(events)
                }
            } catch {
                metrics.refused(status: error == .rejectedFull ? 429 : 503)
                throw error
            }
            kept(events.count, since: start)
        }
        return outcomes
    }

    /// ``keep(_:)`` without waiting: the valid events are queued for the spool before this
    /// returns (so calls made one after another keep their order there), and the future gives
    /// the outcomes once the append is durable, or fails with the ``SpoolError`` (then nothing
    /// of `results` was kept).
    public func submit(_ results: [Result<UsageEvent, EventRejection>], on eventLoop: any EventLoop) -> EventLoopFuture<[Outcome]> {
        let (events, outcomes) = prepare(results)
        if events.isEmpty { return eventLoop.makeSucceededFuture(outcomes) }
        let promise = eventLoop.makePromise(of: [Outcome].self)
        let start = ContinuousClock.now
        let count = events.count
        spool.append(events) { [self] result in
            switch result {
            case .success:
                kept(count, since: start)
                promise.succeed(outcomes)
            case .failure(let error):
                metrics.refused(status: error == .rejectedFull ? 429 : 503)
                promise.fail(error)
            }
        }
        return promise.futureResult
    }

    /// ``submit(_:on:)`` for NDJSON lines, straight from their bytes: a line of the common
    /// shape is validated, fingerprinted and encoded for the spool without building a
    /// ``UsageEvent`` (``EventDecoder/scanPlain(_:now:into:)``); any other line is decoded as
    /// before. Returns every line's outcome at once — to be sent only when `kept` succeeds; when
    /// it fails (with the ``SpoolError``), nothing of these lines was kept.
    public func submit(
        lines: UnsafeBufferPointer<UInt8>, now: EventTime, on eventLoop: any EventLoop
    ) -> (
        outcomes: [Outcome], kept: EventLoopFuture<Void>
    ) {
        let encoded = encode(lines: lines, now: now)
        let (outcomes, batch) = (encoded.outcomes, encoded.batch)
        if let failure = encoded.failure {
            metrics.refused(status: failure == .rejectedFull ? 429 : 503)
            return (outcomes, eventLoop.makeFailedFuture(failure))
        }
        if batch.count == 0 { return (outcomes, eventLoop.makeSucceededVoidFuture()) }
        let promise = eventLoop.makePromise(of: Void.self)
        let start = ContinuousClock.now
        let count = batch.count
        spool.append(batch) { [self] result in
            switch result {
            case .success:
                kept(count, since: start)
                promise.succeed()
            case .failure(let error):
                metrics.refused(status: error == .rejectedFull ? 429 : 503)
                promise.fail(error)
            }
        }
        return (outcomes, promise.futureResult)
    }

    /// Every line's outcome and the spool records of the valid ones, in order. `failure`: a
    /// record could not be encoded (then nothing of these lines may be kept).
    struct EncodedLines {
        var outcomes: [Outcome] = []
        var batch: EncodedBatch
        var failure: SpoolError?
    }

    /// Lines of the common shape go straight from bytes to fingerprint and record; every other
    /// line through ``EventDecoder/decodeLine(_:now:)``. Counts them.
    func encode(lines: UnsafeBufferPointer<UInt8>, now: EventTime) -> EncodedLines {
        var encoded = EncodedLines(batch: EncodedBatch(capacity: lines.count / 128))
        var plain = PlainEvent()
        var scratch: [UInt8] = []
        forEachLine(lines) { line in
            if decoder.scanPlain(line, now: now, into: &plain) {
                encoded.outcomes.append(.accepted(Fingerprint(of: plain, in: line, scratch: &scratch)))
                do throws(SpoolError) { try encoded.batch.append(plain, in: line) } catch { encoded.failure = encoded.failure ?? error }
                return
            }
            switch decoder.decodeLine(line, now: now) {
            case .success(let event):
                encoded.outcomes.append(.accepted(Fingerprint(of: event, scratch: &scratch)))
                do throws(SpoolError) { try encoded.batch.append(event) } catch { encoded.failure = encoded.failure ?? error }
            case .failure(let rejection):
                metrics.rejected(rejection.reason.rawValue)
                encoded.outcomes.append(.rejected(rejection))
            }
        }
        metrics.received.increment(by: Int64(encoded.outcomes.count))
        return encoded
    }

    /// The valid events to append and every result's outcome, fingerprinted; counts them.
    private func prepare(_ results: [Result<UsageEvent, EventRejection>]) -> (events: [UsageEvent], outcomes: [Outcome]) {
        metrics.received.increment(by: Int64(results.count))
        var events: [UsageEvent] = []
        events.reserveCapacity(results.count)
        var outcomes: [Outcome] = []
        outcomes.reserveCapacity(results.count)
        var scratch: [UInt8] = []
        for result in results {
            switch result {
            case .success(let event):
                events.append(event)
                outcomes.append(.accepted(Fingerprint(of: event, scratch: &scratch)))
            case .failure(let rejection):
                metrics.rejected(rejection.reason.rawValue)
                outcomes.append(.rejected(rejection))
            }
        }
        return (events, outcomes)
    }

    private func kept(_ count: Int, since start: ContinuousClock.Instant) {
        metrics.appendLatency.recordNanoseconds((ContinuousClock.now - start).nanoseconds)
        metrics.accepted.increment(by: Int64(count))
        appended()
    }
}

extension SpoolError {
    /// The HTTP status and `Retry-After` seconds for a refused append, or nil when the error is
    /// not "full" (then the agent answers 500: something is broken, not merely busy).
    var fullAnswer: (status: Int, retryAfterSeconds: Int)? {
        switch self {
        case .full(let retryAfter):
            let seconds = max(1, Int((retryAfter.components.seconds)) + (retryAfter.components.attoseconds > 0 ? 1 : 0))
            return (503, seconds)
        case .rejectedFull: return (429, 60)
        default: return nil
        }
    }
}
