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
    ///
    /// NDJSON whose first line has the common shape (``EventDecoder/scanPlain(_:now:into:)``)
    /// goes line by line straight from the bytes (``encode(lines:now:)``). When that line is
    /// plain, ``EventDecoder/decodeBody(_:now:)`` reads the body line by line as well (a whole
    /// value followed by more is NDJSON; one followed by nothing is that line alone), so both
    /// ways give the same outcomes; any other body is that decoder's to read.
    public func ingest(body: ByteBuffer, arrival: SpoolArrival? = nil) async throws(SpoolError) -> [Outcome] {
        let now = EventTime.now()
        let encoded = body.withUnsafeReadableBytes { raw in
            let bytes = raw.bindMemory(to: UInt8.self)
            var plain = PlainEvent()
            if let first = firstLine(bytes), decoder.scanPlain(first, now: now, into: &plain) { return encode(lines: bytes, now: now) }
            return encode(results: decoder.decodeBody(bytes, now: now))
        }
        guard encoded.failure == nil, encoded.batch.count > 0 else {
            arrival?.end()
            if let failure = encoded.failure { throw refused(failure) }
            return encoded.outcomes
        }
        let start = ContinuousClock.now
        do throws(SpoolError) {
            if let arrival {
                try await spool.append(encoded.batch, arrival: arrival)
            } else {
                try await spool.append(encoded.batch)
            }
        } catch {
            throw refused(error)
        }
        kept(encoded.batch.count, since: start)
        return encoded.outcomes
    }

    /// Decodes NDJSON lines and queues their valid events for the spool now (so calls made one
    /// after another keep their order there), each line as ``encode(lines:now:)`` reads it.
    /// Returns every line's outcome at once — to be sent only when `kept` succeeds; when it
    /// fails (with the ``SpoolError``), nothing of these lines was kept.
    public func submit(
        lines: UnsafeBufferPointer<UInt8>, now: EventTime, on eventLoop: any EventLoop
    ) -> (
        outcomes: [Outcome], kept: EventLoopFuture<Void>
    ) {
        let encoded = encode(lines: lines, now: now)
        if let failure = encoded.failure { return (encoded.outcomes, eventLoop.makeFailedFuture(refused(failure))) }
        if encoded.batch.count == 0 { return (encoded.outcomes, eventLoop.makeSucceededVoidFuture()) }
        let promise = eventLoop.makePromise(of: Void.self)
        let start = ContinuousClock.now
        let count = encoded.batch.count
        spool.append(encoded.batch) { [self] result in
            switch result {
            case .success:
                kept(count, since: start)
                promise.succeed()
            case .failure(let error):
                promise.fail(refused(error))
            }
        }
        return (encoded.outcomes, promise.futureResult)
    }

    /// Every event's outcome and the spool records of the valid ones, in order. `failure`: a
    /// record could not be encoded (then nothing of these events may be kept).
    struct EncodedEvents {
        var outcomes: [Outcome] = []
        var batch: EncodedBatch
        var failure: SpoolError?
        /// Canonical bytes for the fingerprints, reused.
        private var scratch: [UInt8] = []

        init(capacity: Int) {
            outcomes.reserveCapacity(capacity)
            batch = EncodedBatch(capacity: capacity)
        }

        mutating func add(_ event: PlainEvent, in line: UnsafeBufferPointer<UInt8>) {
            outcomes.append(.accepted(Fingerprint(of: event, in: line, scratch: &scratch)))
            do throws(SpoolError) { try batch.append(event, in: line) } catch { failure = failure ?? error }
        }

        mutating func add(_ result: Result<UsageEvent, EventRejection>) {
            switch result {
            case .success(let event):
                outcomes.append(.accepted(Fingerprint(of: event, scratch: &scratch)))
                do throws(SpoolError) { try batch.append(event) } catch { failure = failure ?? error }
            case .failure(let rejection):
                outcomes.append(.rejected(rejection))
            }
        }
    }

    /// NDJSON lines: those of the common shape straight from bytes to fingerprint and record,
    /// every other one through ``EventDecoder/decodeLine(_:now:)``. Counts them.
    func encode(lines: UnsafeBufferPointer<UInt8>, now: EventTime) -> EncodedEvents {
        var encoded = EncodedEvents(capacity: lines.count / 128)
        var plain = PlainEvent()
        forEachLine(lines) { line in
            if decoder.scanPlain(line, now: now, into: &plain) {
                encoded.add(plain, in: line)
            } else {
                encoded.add(decoder.decodeLine(line, now: now))
            }
        }
        count(encoded.outcomes)
        return encoded
    }

    /// Already-decoded results, fingerprinted and encoded. Counts them.
    private func encode(results: [Result<UsageEvent, EventRejection>]) -> EncodedEvents {
        var encoded = EncodedEvents(capacity: results.count)
        for result in results { encoded.add(result) }
        count(encoded.outcomes)
        return encoded
    }

    private func count(_ outcomes: [Outcome]) {
        metrics.received.increment(by: Int64(outcomes.count))
        for case .rejected(let rejection) in outcomes { metrics.rejected(rejection.reason.rawValue) }
    }

    /// Counts a refused append (429 when the spool is full, else 503) and gives the error back.
    private func refused(_ error: SpoolError) -> SpoolError {
        metrics.refused(status: error == .rejectedFull ? 429 : 503)
        return error
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
