import TallyCore
import TallySpool
import TallyWire

/// Every decision of the shipper, as one value-type state machine: which collector to connect
/// to and when, when to read the spool and cut a batch (window, linger, rate budget), what an
/// ack frees, when a connection ends and how long to wait before the next one, and when to stop.
/// It embeds ``AgentSession`` (the handshake and the wire window) and ``SpoolWindow`` (the rule
/// that frees spool data only up to the contiguous acknowledged prefix).
///
/// It does no I/O and reads no clock: ``ShipLoop`` feeds it inputs (a connection opened or
/// failed, a frame, a spool read, a batch cut under a leased sequence, a tick, a shutdown), each
/// with the time, and carries out the ``Action``s each returns, in order, feeding back the
/// result of each request (``Action/readSpool(from:maxEvents:)`` is answered by
/// ``spoolRead(events:end:full:now:)`` or ``localFailure(_:now:)``, and so on).
///
/// Guarantees (each tested without sockets in `ShipperMachineTests`):
/// - Spool data is freed only up to the end of the contiguous acknowledged prefix; an ack for a
///   later batch frees nothing until every batch before it is acked.
/// - A batch keeps its sequence for life: it is resent under it after a reconnect, a goaway or a
///   move to the next collector; a sequence is never used for a second batch.
/// - At most `window` batches are cut and not yet freed.
/// - A connection that ends (cut, refused, goaway, handshake timeout) leads to the next
///   collector in list order when there are several, after a delay: the goaway's, exponential
///   backoff with full jitter, or a long one after an error an operator must fix. The backoff
///   resets only after a connection that did useful work (an ack, or nothing to send).
/// - A batch unacknowledged for ``Settings/ackTimeout`` (a lost ack, a hung collector) ends the
///   connection, so one lost ack cannot stall the spool forever.
/// - On shutdown it waits for in-flight acks up to a grace period, then stops; a checkpoint that
///   could not be stored is tried once more on the way out.
struct ShipperMachine {
    typealias Instant = ContinuousClock.Instant

    private enum Link: Sendable, Hashable {
        /// No connection; connect once the time comes.
        case waiting(until: Instant)
        case connecting
        case open(handshakeDeadline: Instant, welcomed: Bool)
        case stopped
    }

    /// The one spool request that may be outstanding.
    private enum Work: Sendable, Hashable {
        case idle
        case reading(allowed: Int, maxEvents: Int)
        case cutting(end: SpoolPosition, events: Int)
    }

    let settings: Settings
    private(set) var session: AgentSession
    private(set) var window = SpoolWindow()
    private(set) var rotation: CollectorRotation
    private var backoff: Backoff
    private var random: SplitMix64
    private var link: Link
    private var work = Work.idle
    private(set) var readPosition = SpoolPosition(segment: 0, offset: 0)
    private var spoolMayHaveData = true
    private var lingerDeadline: Instant?
    private var rateStart: Instant
    private var eventsCut = 0
    private(set) var stopping = false
    private var stopDeadline: Instant?
    private var pausedUntil: Instant?
    /// Acked spool data whose checkpoint could not be stored yet: retried on ticks; until then
    /// the data stays (a restart would resend it; the collector dedupes).
    private(set) var unsavedAck: SpoolPosition?
    private var retryCheckpointAt: Instant
    private var acksThisConnection = 0
    /// When each batch in flight on this connection was sent.
    private var sentAt: [UInt64: Instant] = [:]
    private var batchesThisConnection = 0
    private var drained: Bool?

    init(settings: Settings, session: AgentSession.Configuration, rotation: CollectorRotation, now: Instant, jitterSeed: UInt64) {
        self.settings = settings
        self.session = AgentSession(configuration: session)
        self.rotation = rotation
        backoff = Backoff(initial: settings.reconnect.initial, maximum: settings.reconnect.maximum)
        random = SplitMix64(seed: jitterSeed)
        link = .waiting(until: now)
        rateStart = now
        retryCheckpointAt = now
    }

    /// Batches cut and not yet acknowledged.
    var unacknowledged: Int { window.unacknowledged }

    /// Whether the machine has stopped.
    var isStopped: Bool { link == .stopped }

    // MARK: Inputs

    /// The shipper starts: connect to the collector the rotation picked.
    mutating func start(now: Instant) -> [Action] {
        guard case .waiting = link else { return [] }
        return connect()
    }

    /// The connection asked for is up: say hello.
    mutating func connected(agentNonce: Nonce, now: Instant) -> [Action] {
        guard link == .connecting else { return [.close] }
        link = .open(handshakeDeadline: now + settings.handshakeTimeout, welcomed: false)
        acksThisConnection = 0
        batchesThisConnection = 0
        return perform(session.connected(agentNonce: agentNonce), now: now) + afterInput(now)
    }

    /// The connection asked for could not be opened.
    mutating func connectFailed(_ ending: Ending, now: Instant) -> [Action] {
        guard link == .connecting else { return [] }
        return end(ending, now: now)
    }

    /// A frame arrived on the current connection.
    mutating func received(_ frame: Frame, now: Instant) -> [Action] {
        guard case .open(let deadline, let welcomed) = link else { return [] }
        var actions = perform(session.received(frame), now: now)
        guard case .open = link else { return actions + afterInput(now) }
        if !welcomed && session.isReady {
            link = .open(handshakeDeadline: deadline, welcomed: true)
            actions.append(.report(.sessionOpen(collector: rotation.index)))
        }
        if session.isDrained {
            actions += end(.goaway(retryAfter: session.retryAfterMilliseconds.map { .milliseconds(Int64($0)) }), now: now)
        }
        return actions + afterInput(now)
    }

    /// The current connection is gone: closed by the collector, cut, or a write failed.
    mutating func disconnected(_ reason: String?, now: Instant) -> [Action] {
        guard case .open = link else { return [] }
        return end(.failed(reason ?? "the collector closed the connection"), now: now)
    }

    /// New events are in the spool.
    mutating func spoolAppended(now: Instant) -> [Action] {
        spoolMayHaveData = true
        return afterInput(now)
    }

    /// Time passed: deadlines (reconnect, handshake, linger, pause, stop) and the checkpoint retry.
    mutating func tick(now: Instant) -> [Action] {
        var actions: [Action] = []
        if let unsaved = unsavedAck, now >= retryCheckpointAt {
            retryCheckpointAt = now + settings.localRetry
            actions.append(.freeSpool(upTo: unsaved))
        }
        switch link {
        case .waiting(let until) where now >= until && !stopping:
            return actions + connect()
        case .open(let deadline, welcomed: false) where now > deadline:
            return actions + end(.failed("the handshake timed out"), now: now)
        case .open:
            if let (sequence, sent) = sentAt.min(by: { $0.value < $1.value }), now - sent >= settings.ackTimeout {
                return actions + end(.failed("batch \(sequence) was not acknowledged within \(settings.ackTimeout)"), now: now)
            }
            return actions + afterInput(now)
        default:
            return actions + afterInput(now)
        }
    }

    /// Stop: wait for in-flight acks up to the grace period, then stop.
    mutating func shutdown(now: Instant) -> [Action] {
        if !stopping {
            stopping = true
            stopDeadline = now + settings.shutdownGrace
        }
        return afterInput(now)
    }

    /// The answer to ``Action/readSpool(from:maxEvents:)``: `events` events read, ending at `end`;
    /// `full` when the read stopped at one of its limits (`maxEvents`, or the byte cap
    /// `batch.max_bytes`) with more records after `end` (``SpoolBatch/reachedLimit``).
    ///
    /// A batch shorter than `maxEvents` lingers for more events only when the read reached the
    /// spool's end. One cut short by the byte cap is full: waiting would add nothing to it. It
    /// used to linger too, with the spool read again on every tick: an agent whose events were
    /// large enough that `max_events` of them passed `max_bytes` (8,000 reference events, or
    /// 1,000 of over 1 KiB) drained its backlog at a batch per linger per window slot, the reads
    /// repeated meanwhile costing four times the spool-reading CPU per event (`tally-bench agent`,
    /// 8,000-event batches: 90,025-98,579 events/s, 2.3-2.7 µs of spool reading per event,
    /// against 165,640 and 0.64 µs with the cap out of the way).
    mutating func spoolRead(events: Int, end: SpoolPosition, full: Bool, now: Instant) -> [Action] {
        guard case .reading(let allowed, let maxEvents) = work else { return [] }
        work = .idle
        var actions: [Action] = []
        if events == 0 {
            spoolMayHaveData = false
            lingerDeadline = nil
            if end > readPosition { readPosition = end }
            if window.isEmpty {
                actions += reportDrained(true)
                if settings.stopWhenDrained { stopNow(now) }
            }
            return actions + afterInput(now)
        }
        actions += reportDrained(false)
        if !full && events < allowed && events < maxEvents && !settings.stopWhenDrained {
            // A partial batch waits up to the linger for more events.
            guard let deadline = lingerDeadline else {
                lingerDeadline = now + settings.linger
                return actions
            }
            if now < deadline { return actions }
        }
        lingerDeadline = nil
        work = .cutting(end: end, events: events)
        return actions + [.cutBatch]
    }

    /// The answer to ``Action/cutBatch``: the events just read, encoded under a leased sequence.
    mutating func batchCut(_ batch: AgentSession.OutgoingBatch, now: Instant) -> [Action] {
        guard case .cutting(let end, let events) = work else { return [] }
        work = .idle
        guard window.cut(sequence: batch.sequence, start: readPosition, end: end, events: events) else {
            link = .stopped
            return [.close, .abort("sequence \(batch.sequence) was leased twice; it is not used for a second batch")]
        }
        readPosition = end
        eventsCut += events
        spoolMayHaveData = true
        return perform(session.enqueue(batch), now: now) + afterInput(now)
    }

    /// A spool read or sequence lease failed: nothing was cut; the same events are read again
    /// after a pause, and the agent keeps ingesting.
    mutating func localFailure(_ problem: String, now: Instant) -> [Action] {
        work = .idle
        pausedUntil = now + settings.localRetry
        return [.report(.paused(problem))]
    }

    /// The answer to ``Action/freeSpool(upTo:)``: stored.
    mutating func spoolFreed(upTo position: SpoolPosition) -> [Action] {
        guard let unsaved = unsavedAck, position >= unsaved else { return [] }
        unsavedAck = nil
        return [.report(.checkpointStoredAgain(position))]
    }

    /// The answer to ``Action/freeSpool(upTo:)``: not stored (a full or failing disk). Kept to
    /// retry; shipping goes on.
    mutating func spoolFreeFailed(upTo position: SpoolPosition, now: Instant) -> [Action] {
        let first = unsavedAck == nil
        unsavedAck = max(unsavedAck ?? position, position)
        retryCheckpointAt = now + settings.localRetry
        return [.report(.checkpointFailing(first: first))]
    }

    // MARK: Decisions

    private mutating func connect() -> [Action] {
        link = .connecting
        return [.connect(collector: rotation.index)]
    }

    /// After every input: stop when the stop rules say so, otherwise cut batches while the
    /// window has room.
    private mutating func afterInput(_ now: Instant) -> [Action] {
        if link == .stopped { return [] }
        if stopping {
            if case .open = link, window.unacknowledged > 0, session.isReady, now < (stopDeadline ?? now) { return [] }
            return finish()
        }
        return fill(now)
    }

    /// Asks for the next spool read when a batch may be cut: the session is open, nothing else
    /// is outstanding, the window has room, the spool may hold data (or a linger is running),
    /// no pause is on and the rate budget allows.
    private mutating func fill(_ now: Instant) -> [Action] {
        guard case .open = link, session.isReady, work == .idle else { return [] }
        if let pausedUntil {
            if now < pausedUntil { return [] }
            self.pausedUntil = nil
        }
        guard window.count < settings.window, spoolMayHaveData || lingerDeadline != nil else { return [] }
        let maxEvents = min(settings.maxEvents, Int(session.limits?.maxEventsPerBatch ?? UInt32(settings.maxEvents)))
        var allowed = maxEvents
        if let rate = settings.eventsPerSecond {
            let elapsed = now - rateStart
            let budget = Int(elapsed.nanoseconds / 1_000_000 * Int64(rate) / 1_000) + max(1, rate / 20) - eventsCut
            if budget <= 0 { return [] }
            allowed = min(allowed, budget)
        }
        work = .reading(allowed: allowed, maxEvents: maxEvents)
        return [.readSpool(from: readPosition, maxEvents: allowed)]
    }

    /// Carries one action of the session into the shipper's actions.
    private mutating func perform(_ action: AgentSession.Action, now: Instant) -> [Action] {
        switch action {
        case .none:
            return []
        case .send(let frames):
            return send(frames, now: now)
        case .acknowledged(let ack, let frames):
            return acknowledged(ack, now: now) + send(frames, now: now)
        case .sendErrorAndClose(let error):
            return [.send([.error(error.frame)])] + end(error.isRetryable ? .failed(error.description) : .fatal(error), now: now)
        case .close(let error, let retryAfter):
            if error.code == .shuttingDown || retryAfter != nil {
                return end(.goaway(retryAfter: retryAfter.map { .milliseconds(Int64($0)) }), now: now)
            }
            return end(error.isRetryable ? .failed(error.description) : .fatal(error), now: now)
        }
    }

    private mutating func send(_ frames: [Frame], now: Instant) -> [Action] {
        guard !frames.isEmpty else { return [] }
        for case .batch(let batch) in frames {
            batchesThisConnection += 1
            sentAt[batch.sequence] = now
        }
        return [.send(frames)]
    }

    /// An ack: mark its batch, then free the spool up to the end of the contiguous acked prefix.
    private mutating func acknowledged(_ ack: BatchAck, now: Instant) -> [Action] {
        sentAt[ack.sequence] = nil
        guard let (events, freeUpTo) = window.acknowledge(ack.sequence) else { return [] }
        acksThisConnection += 1
        var actions: [Action] = [.report(.acknowledged(ack, events: events))]
        if let freeUpTo {
            actions.append(
                .recordAcknowledged(window.freed.map { AcknowledgedBatch(sequence: $0.sequence, start: $0.start, end: $0.end) }))
            actions.append(.freeSpool(upTo: freeUpTo))
        }
        if window.isEmpty && !spoolMayHaveData && settings.stopWhenDrained { stopNow(now) }
        return actions
    }

    /// The connection ended: everything unacked stays queued in the session (sent again under
    /// its sequence on the next connection); move to the next collector and wait.
    private mutating func end(_ ending: Ending, now: Instant) -> [Action] {
        var actions: [Action] = []
        var welcomed = false
        if case .open(_, let wasWelcomed) = link {
            actions.append(.close)
            welcomed = wasWelcomed
        }
        session.connectionClosed()
        work = .idle
        lingerDeadline = nil
        // A collector that welcomes and then refuses every batch must not be hammered: only an
        // ack (or a connection with nothing to send) proves the path works.
        if acksThisConnection > 0 || (welcomed && batchesThisConnection == 0) { backoff.reset() }
        acksThisConnection = 0
        batchesThisConnection = 0
        sentAt = [:]
        let delay: Duration
        switch ending {
        case .goaway(let retryAfter): delay = retryAfter ?? backoff.next(using: &random)
        case .fatal, .refused: delay = settings.reconnect.afterFatalError
        case .failed: delay = backoff.next(using: &random)
        }
        let from = rotation.index
        let movingTo = rotation.canMove ? rotation.next() : nil
        actions.append(
            .report(.connectionEnded(ending, collector: from, retryIn: delay, movingTo: movingTo, unacknowledged: window.unacknowledged)))
        link = .waiting(until: now + delay)
        if stopping { return actions + finish() }
        return actions
    }

    private mutating func stopNow(_ now: Instant) {
        stopping = true
        stopDeadline = now
    }

    private mutating func finish() -> [Action] {
        var actions: [Action] = []
        if case .open = link {
            session.connectionClosed()
            actions.append(.close)
        }
        link = .stopped
        if let unsavedAck { actions.append(.freeSpool(upTo: unsavedAck)) }
        return actions + [.stop]
    }

    private mutating func reportDrained(_ value: Bool) -> [Action] {
        guard drained != value else { return [] }
        drained = value
        return [.report(.drained(value))]
    }
}
