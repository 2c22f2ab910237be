import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import TallyTLS
import TallyConfig
import TallyCore
import TallySpool
import TallyWire

/// How one collector connection ended.
enum Ending {
    case failed(String)
    /// This agent refused the connection (a plain one to a remote collector): back off long.
    case refused(String)
    case fatal(WireError)
    case goaway(retryAfter: Duration?)
    case stop
}


/// The shipper's single-owner loop: it alone touches the session state machine, the pending
/// list and the read position, so no lock is needed and frames are written in order.
struct ShipLoop {
    let shipper: Shipper
    var lease: SequenceLease
    let encoder: BatchPayloadEncoder
    var iterator: AsyncStream<Shipper.Input>.Iterator
    var session: AgentSession
    var pending = SpoolWindow()
    var readPosition = SpoolPosition(segment: 0, offset: 0)
    var spoolMayHaveData = true
    var lingerDeadline: ContinuousClock.Instant?
    var stopping = false
    var stopDeadline: ContinuousClock.Instant?
    var connectionId = 0
    var rateStart = ContinuousClock.now
    var eventsCut = 0
    /// Acked spool data whose checkpoint could not be stored yet (a full or failing disk): it is
    /// retried on ticks; until then the data stays (a restart would resend it; the collector
    /// dedupes).
    var unsavedAck: SpoolPosition?
    /// No spool read or sequence lease is tried before this (after a failure).
    var pausedUntil: ContinuousClock.Instant?
    var retryCheckpointAt = ContinuousClock.now
    /// Acks and batches on the current connection: the backoff resets only after a connection
    /// that did useful work (an ack), or that had nothing to send.
    var acksThisConnection = 0
    var batchesThisConnection = 0

    var settings: Shipper.Settings { shipper.settings }
    var logger: Logger { shipper.logger }
    var metrics: AgentMetrics { shipper.metrics }

    init(shipper: Shipper, lease: SequenceLease, encoder: BatchPayloadEncoder, iterator: AsyncStream<Shipper.Input>.Iterator) {
        self.shipper = shipper
        self.lease = lease
        self.encoder = encoder
        self.iterator = iterator
        session = AgentSession(
            configuration: AgentSession.Configuration(
                agentId: shipper.settings.agentId, secret: shipper.settings.key.map { Array($0.utf8) },
                software: "tally-agent", window: shipper.settings.window))
    }

    mutating func run() async throws {
        var backoff = Backoff(initial: settings.reconnect.initial, maximum: settings.reconnect.maximum)
        var rotation = CollectorRotation.start(agentId: settings.agentId, count: settings.collectors.count)
        logger.info(
            "shipping to the collector picked by the agent id",
            metadata: ["collector": "\(settings.collectors[rotation.index])", "position": "\(rotation.index + 1) of \(rotation.count)"])
        while !stopping {
            let endpoint = settings.collectors[rotation.index]
            connectionId += 1
            let id = connectionId
            var welcomed = false
            acksThisConnection = 0
            batchesThisConnection = 0
            let ending: Ending
            do {
                let channel = try await shipper.connect(endpoint)
                shipper.status.update { $0.connections += 1 }
                if id > 1 { metrics.reconnects.increment() }
                logger.debug("connected to collector", metadata: ["collector": "\(endpoint)"])
                ending = try await channel.executeThenClose { inbound, outbound in
                    let reader = Task { [shipper] in
                        do {
                            for try await frame in inbound { shipper.feed(.frame(connection: id, frame)) }
                            shipper.feed(.closed(connection: id, nil))
                        } catch {
                            shipper.feed(.closed(connection: id, "\(error)"))
                        }
                    }
                    defer { reader.cancel() }
                    return try await converse(id, endpoint: endpoint, outbound: outbound, welcomed: &welcomed)
                }
            } catch let error as ShipperError {
                throw error
            } catch let error as TransportRefusal {
                ending = .refused(error.description)
            } catch {
                ending = .failed("\(endpoint): \(ConnectionFailureText.describe(error))")
            }
            session.connectionClosed()
            metrics.connected.record(0)
            metrics.batchesInFlight.record(0)
            shipper.status.update { $0.connectedTo = nil }
            // A collector that welcomes and then refuses every batch must not be hammered: only
            // an ack (or a connection with nothing to send) proves the path works.
            if acksThisConnection > 0 || (welcomed && batchesThisConnection == 0) { backoff.reset() }
            let delay: Duration
            let cause: String
            switch ending {
            case .stop:
                if let position = unsavedAck { await saveCheckpoint(position) }
                return
            case .goaway(let retryAfter):
                if !rotation.canMove { logger.info("collector sent goaway; reconnecting", metadata: ["collector": "\(endpoint)"]) }
                cause = "goaway"
                delay = retryAfter ?? backoff.next()
            case .fatal(let error):
                logger.error("collector refused this agent; an operator must act", metadata: ["collector": "\(endpoint)", "error": "\(error)"])
                shipper.status.update { $0.lastError = error.description }
                cause = "refused by the collector"
                delay = settings.reconnect.afterFatalError
            case .refused(let reason):
                logger.error("collector connection refused by this agent; an operator must act", metadata: ["reason": "\(reason)"])
                shipper.status.update { $0.lastError = reason }
                cause = "refused by this agent"
                delay = settings.reconnect.afterFatalError
            case .failed(let reason):
                logger.warning("collector connection failed", metadata: ["collector": "\(endpoint)", "reason": "\(reason)"])
                shipper.status.update { $0.lastError = reason }
                cause = "failed"
                delay = backoff.next()
            }
            // Every unacked batch stays in the session's queue (connectionClosed above) and is
            // sent again, under its sequence, on whichever collector comes next.
            if rotation.canMove {
                rotation.next()
                let unacked = pending.unacknowledged
                logger.info(
                    "moving to the next collector; unacked batches will be resent there",
                    metadata: [
                        "from": "\(endpoint)", "collector": "\(settings.collectors[rotation.index])", "cause": "\(cause)",
                        "unacked_batches": "\(unacked)",
                    ])
            }
            if try await wait(delay) { return }
        }
    }

    /// Waits `delay` while taking inputs; true when a shutdown came.
    mutating func wait(_ delay: Duration) async throws -> Bool {
        let deadline = ContinuousClock.now + delay
        while ContinuousClock.now < deadline {
            guard let next = await iterator.next() else { return true }
            switch next {
            case .shutdown: return true
            case .dataAvailable: spoolMayHaveData = true
            case .tick: await retryCheckpoint()
            default: break
            }
        }
        return false
    }

    /// One connection: handshake, then batches and acks until it ends.
    mutating func converse(
        _ id: Int, endpoint: HostPort, outbound: NIOAsyncChannelOutboundWriter<Frame>, welcomed: inout Bool
    ) async throws -> Ending {
        let handshakeDeadline = ContinuousClock.now + settings.handshakeTimeout
        if let ending = try await perform(session.connected(agentNonce: Nonce.random()), outbound) { return ending }
        while let next = await iterator.next() {
            switch next {
            case .frame(let connection, let frame):
                guard connection == id else { continue }
                let wasReady = session.isReady
                if let ending = try await perform(session.received(frame), outbound) { return ending }
                if !wasReady && session.isReady {
                    welcomed = true
                    metrics.connected.record(1)
                    shipper.status.update { $0.connectedTo = endpoint }
                    logger.info("collector session open", metadata: ["collector": "\(endpoint)"])
                }
                if session.isDrained {
                    return .goaway(retryAfter: session.retryAfterMilliseconds.map { Duration.milliseconds(Int64($0)) })
                }
            case .closed(let connection, let reason):
                guard connection == id else { continue }
                return .failed(reason ?? "the collector closed the connection")
            case .dataAvailable:
                spoolMayHaveData = true
            case .tick:
                if !welcomed && ContinuousClock.now > handshakeDeadline { return .failed("the handshake timed out") }
                await retryCheckpoint()
            case .shutdown:
                stopping = true
                stopDeadline = ContinuousClock.now + settings.shutdownGrace
            }
            if stopping {
                let outstanding = pending.unacknowledged > 0
                if !outstanding || !session.isReady || ContinuousClock.now >= (stopDeadline ?? .now) { return .stop }
                continue
            }
            if session.isReady {
                if let ending = try await fill(outbound) { return ending }
            }
        }
        return .stop
    }

    /// Cuts batches from the spool while the window has room.
    mutating func fill(_ outbound: NIOAsyncChannelOutboundWriter<Frame>) async throws -> Ending? {
        let maxEvents = min(settings.batching.maxEvents, Int(session.limits?.maxEventsPerBatch ?? UInt32(settings.batching.maxEvents)))
        if let pausedUntil, ContinuousClock.now < pausedUntil { return nil }
        pausedUntil = nil
        while pending.count < settings.window, spoolMayHaveData || lingerDeadline != nil {
            var allowed = maxEvents
            if let rate = settings.eventsPerSecond {
                let elapsed = ContinuousClock.now - rateStart
                let budget = Int(elapsed.nanoseconds / 1_000_000 * Int64(rate) / 1_000) + max(1, rate / 20) - eventsCut
                if budget <= 0 { return nil }
                allowed = min(allowed, budget)
            }
            let batch: SpoolBatch
            do {
                batch = try await shipper.spool.read(from: readPosition, maxEvents: allowed, maxBytes: settings.batching.maxBytes)
            } catch {
                pause(because: "spool read failed: \(error)")
                return nil
            }
            if batch.skippedCorruptRegions > 0 {
                logger.error("spool regions quarantined while reading", metadata: ["regions": "\(batch.skippedCorruptRegions)"])
            }
            if batch.events.isEmpty {
                spoolMayHaveData = false
                lingerDeadline = nil
                if batch.end > readPosition { readPosition = batch.end }
                if pending.isEmpty { shipper.status.update { $0.drained = true } }
                if settings.stopWhenDrained && pending.isEmpty { stopping = true }
                return nil
            }
            shipper.status.update { $0.drained = false }
            if batch.events.count < allowed && batch.events.count < maxEvents {
                let now = ContinuousClock.now
                if let deadline = lingerDeadline {
                    if now < deadline && !settings.stopWhenDrained { return nil }
                } else if !settings.stopWhenDrained {
                    lingerDeadline = now + settings.batching.linger
                    return nil
                }
            }
            lingerDeadline = nil
            let sequence: UInt64
            do {
                sequence = try await lease.take()
            } catch {
                // Nothing was cut: the same events are read again after the pause.
                pause(because: error.description)
                return nil
            }
            let outgoing: AgentSession.OutgoingBatch
            do {
                outgoing = try AgentSession.OutgoingBatch(sequence: sequence, events: batch.events, encoder: encoder)
            } catch {
                throw ShipperError.encoding(error.description)
            }
            guard pending.cut(sequence: sequence, end: batch.end, events: batch.events.count) else {
                throw ShipperError.spool("sequence \(sequence) was leased twice; it is not used for a second batch")
            }
            readPosition = batch.end
            eventsCut += batch.events.count
            spoolMayHaveData = true
            if let ending = try await perform(session.enqueue(outgoing), outbound) { return ending }
        }
        return nil
    }

    /// Stops cutting batches for a second after a local failure (a spool read, the sequence
    /// store): the agent stays up, keeps ingesting and says why in its health.
    private mutating func pause(because problem: String) {
        logger.error("shipping paused for 1s", metadata: ["problem": "\(problem)"])
        shipper.status.update { $0.lastError = problem }
        pausedUntil = ContinuousClock.now + .seconds(1)
    }

    /// Stores a checkpoint that failed earlier (at most once a second).
    mutating func retryCheckpoint() async {
        guard let position = unsavedAck, ContinuousClock.now >= retryCheckpointAt else { return }
        await saveCheckpoint(position)
    }

    /// Frees the spool up to `position`; on failure keeps it to retry, and carries on shipping.
    private mutating func saveCheckpoint(_ position: SpoolPosition) async {
        do {
            try await shipper.spool.acknowledge(upTo: position)
            if unsavedAck != nil { logger.notice("spool checkpoint stored again", metadata: ["position": "\(position)"]) }
            unsavedAck = nil
        } catch {
            metrics.checkpointFailures.increment()
            if unsavedAck == nil {
                logger.error("could not store the spool checkpoint; retrying every second, shipping goes on", metadata: ["error": "\(error)"])
            }
            unsavedAck = position
            retryCheckpointAt = ContinuousClock.now + .seconds(1)
        }
    }

    /// Carries out one action of the session; returns how the connection ends, if it does.
    mutating func perform(_ action: AgentSession.Action, _ outbound: NIOAsyncChannelOutboundWriter<Frame>) async throws -> Ending? {
        switch action {
        case .none:
            return nil
        case .send(let frames):
            try await write(frames, outbound)
            return nil
        case .acknowledged(let ack, let frames):
            try await acknowledged(ack)
            try await write(frames, outbound)
            return nil
        case .sendErrorAndClose(let error):
            try? await outbound.write(.error(error.frame))
            return error.isRetryable ? .failed(error.description) : .fatal(error)
        case .close(let error, let retryAfter):
            if error.code == .shuttingDown || retryAfter != nil {
                return .goaway(retryAfter: retryAfter.map { Duration.milliseconds(Int64($0)) })
            }
            return error.isRetryable ? .failed(error.description) : .fatal(error)
        }
    }

    private mutating func write(_ frames: [Frame], _ outbound: NIOAsyncChannelOutboundWriter<Frame>) async throws {
        guard !frames.isEmpty else { return }
        try await outbound.write(contentsOf: frames)
        var batches = 0
        for case .batch in frames { batches += 1 }
        if batches > 0 {
            batchesThisConnection += batches
            metrics.batchesSent.increment(by: Int64(batches))
            shipper.status.update { $0.batchesSent += batches }
        }
        metrics.batchesInFlight.record(pending.unacknowledged)
    }

    /// An ack arrived: mark its batch, then free the spool up to the end of the contiguous
    /// acked prefix (never past an unacked batch).
    private mutating func acknowledged(_ ack: BatchAck) async throws {
        guard let (events, freeUpTo) = pending.acknowledge(ack.sequence) else { return }
        if ack.status == .malformed {
            metrics.acksMalformed.increment()
            logger.critical(
                "the collector could not decode a batch; its events are explained as rejected (malformed) and kept in the collector's quarantine",
                metadata: ["sequence": "\(ack.sequence)", "events": "\(events)"])
        } else {
            metrics.acksCommitted.increment()
        }
        metrics.eventsAcked["accepted"]?.increment(by: Int64(ack.accepted))
        metrics.eventsAcked["duplicate"]?.increment(by: Int64(ack.duplicate))
        metrics.eventsAcked["late"]?.increment(by: Int64(ack.late))
        metrics.eventsAcked["rejected"]?.increment(by: Int64(ack.rejected))
        shipper.status.update {
            $0.batchesAcked += 1
            $0.eventsAcked += events
        }
        acksThisConnection += 1
        if let freeUpTo { await saveCheckpoint(freeUpTo) }
        metrics.batchesInFlight.record(pending.unacknowledged)
        if pending.isEmpty && !spoolMayHaveData && settings.stopWhenDrained { stopping = true }
    }
}
