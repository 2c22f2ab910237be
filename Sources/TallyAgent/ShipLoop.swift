import Logging
import NIOCore
import NIOPosix
import TallyConfig
import TallyCore
import TallySpool
import TallyWire

/// Carries out what ``ShipperMachine`` decides, and nothing else: it opens and closes
/// connections, writes frames, reads and frees the spool, leases sequences and encodes batches,
/// and turns the machine's reports into logs, metrics and status. Inputs (frames, ticks, new
/// spool data, shutdown) arrive on one stream, so this loop alone owns the machine and frames are
/// written in order without a lock.
struct ShipLoop {
    let shipper: Shipper
    let encoding: BatchEncoding
    var iterator: AsyncStream<Shipper.Input>.Iterator
    var machine: ShipperMachine
    /// Frames and closes of an older connection are ignored.
    var connectionId = 0
    /// The events of the last spool read, held until the machine cuts them or reads again.
    var lastRead = EventSpans()
    /// The last checkpoint failure, for the log line of the machine's report.
    var checkpointError = ""

    var settings: Shipper.Settings { shipper.settings }
    var logger: Logger { shipper.logger }
    var metrics: AgentMetrics { shipper.metrics }

    /// Where the loop stands after carrying out actions.
    enum Boundary {
        case connect(Int)
        case close
        case stop
    }

    init(shipper: Shipper, encoding: BatchEncoding, iterator: AsyncStream<Shipper.Input>.Iterator) {
        self.shipper = shipper
        self.encoding = encoding
        self.iterator = iterator
        let settings = shipper.settings
        machine = ShipperMachine(
            settings: ShipperMachine.Settings(
                window: settings.window, maxEvents: settings.batching.maxEvents, linger: settings.batching.linger,
                eventsPerSecond: settings.eventsPerSecond, stopWhenDrained: settings.stopWhenDrained,
                shutdownGrace: settings.shutdownGrace, handshakeTimeout: settings.handshakeTimeout, ackTimeout: settings.ackTimeout,
                reconnect: settings.reconnect),
            session: AgentSession.Configuration(
                agentId: settings.agentId, secret: settings.key.map { Array($0.utf8) }, software: "tally-agent", window: settings.window),
            rotation: CollectorRotation.start(agentId: settings.agentId, count: settings.collectors.count),
            now: .now, jitterSeed: UInt64.random(in: .min ... .max))
    }

    mutating func run() async throws {
        let first = machine.rotation
        logger.info(
            "shipping to the collector picked by the agent id",
            metadata: ["collector": "\(settings.collectors[first.index])", "position": "\(first.index + 1) of \(first.count)"])
        var actions = machine.start(now: .now)
        while true {
            switch try await carryOut(&actions, outbound: nil) {
            case .connect(let index):
                actions = try await converse(collector: index)
            case .stop:
                return
            case .close, nil:
                guard let input = await iterator.next() else { return }
                actions = take(input)
            }
        }
    }

    /// One connection, from connect to close; returns the machine's actions left after the close.
    mutating func converse(collector index: Int) async throws -> [ShipperMachine.Action] {
        let endpoint = settings.collectors[index]
        connectionId += 1
        let id = connectionId
        let channel: NIOAsyncChannel<Frame, Frame>
        do {
            channel = try await shipper.connect(endpoint)
        } catch let error as TransportRefusal {
            return machine.connectFailed(.refused(error.description), now: .now)
        } catch {
            return machine.connectFailed(.failed("\(endpoint): \(ConnectionFailureText.describe(error))"), now: .now)
        }
        shipper.status.update { $0.connections += 1 }
        if id > 1 { metrics.reconnects.increment() }
        logger.debug("connected to collector", metadata: ["collector": "\(endpoint)"])
        defer {
            metrics.connected.record(0)
            metrics.batchesInFlight.record(0)
            shipper.status.update { $0.connectedTo = nil }
        }
        return try await channel.executeThenClose { inbound, outbound in
            let reader = Task { [shipper] in
                do {
                    for try await frame in inbound { shipper.feed(.frame(connection: id, frame)) }
                    shipper.feed(.closed(connection: id, nil))
                } catch {
                    shipper.feed(.closed(connection: id, ConnectionFailureText.describe(error)))
                }
            }
            defer { reader.cancel() }
            var actions = machine.connected(agentNonce: Nonce.random(), now: .now)
            while true {
                switch try await carryOut(&actions, outbound: outbound) {
                case .close:
                    return actions
                case .stop:
                    return [.stop]
                case .connect(let other):
                    // The machine closes before it connects again; kept for completeness.
                    return [.connect(collector: other)] + actions
                case nil:
                    guard let input = await iterator.next() else { return [.stop] }
                    actions = take(input)
                }
            }
        }
    }

    /// Feeds one input to the machine.
    mutating func take(_ input: Shipper.Input) -> [ShipperMachine.Action] {
        switch input {
        case .frame(let connection, let frame):
            return connection == connectionId ? machine.received(frame, now: .now) : []
        case .closed(let connection, let reason):
            return connection == connectionId ? machine.disconnected(reason, now: .now) : []
        case .dataAvailable:
            return machine.spoolAppended(now: .now)
        case .tick:
            return machine.tick(now: .now)
        case .shutdown:
            return machine.shutdown(now: .now)
        }
    }

    /// Carries out actions in order, feeding each request's result back to the machine, until
    /// none is left (nil) or one needs the connection to change.
    mutating func carryOut(
        _ actions: inout [ShipperMachine.Action], outbound: NIOAsyncChannelOutboundWriter<Frame>?
    ) async throws -> Boundary? {
        defer { metrics.batchesInFlight.record(machine.unacknowledged) }
        while !actions.isEmpty {
            switch actions.removeFirst() {
            case .connect(let index):
                return .connect(index)
            case .close:
                if outbound != nil { return .close }
            case .stop:
                return .stop
            case .abort(let reason):
                throw ShipperError.invariant(reason)
            case .send(let frames):
                guard let outbound else { continue }
                do {
                    try await outbound.write(contentsOf: frames)
                    countSent(frames)
                } catch {
                    actions += machine.disconnected(ConnectionFailureText.describe(error), now: .now)
                }
            case .readSpool(let position, let maxEvents):
                do {
                    let batch = try await shipper.spool.readSpans(from: position, maxEvents: maxEvents, maxBytes: settings.batching.maxBytes)
                    if batch.skippedCorruptRegions > 0 {
                        logger.error("spool regions quarantined while reading", metadata: ["regions": "\(batch.skippedCorruptRegions)"])
                    }
                    lastRead = batch.events
                    actions += machine.spoolRead(events: batch.events.count, end: batch.end, full: batch.reachedLimit, now: .now)
                } catch {
                    actions += machine.localFailure("spool read failed: \(error)", now: .now)
                }
            case .cutBatch:
                let events = lastRead
                lastRead = EventSpans()
                let sequence: UInt64
                do {
                    sequence = try await shipper.spool.takeSequence()
                } catch {
                    actions += machine.localFailure("batch sequence store: \(error)", now: .now)
                    continue
                }
                let batch = try await encoding.encode(sequence: sequence, events: events)
                actions += machine.batchCut(batch, now: .now)
            case .freeSpool(let position):
                do {
                    try await shipper.spool.acknowledge(upTo: position)
                    actions += machine.spoolFreed(upTo: position)
                } catch {
                    metrics.checkpointFailures.increment()
                    checkpointError = "\(error)"
                    actions += machine.spoolFreeFailed(upTo: position, now: .now)
                }
            case .recordAcknowledged(let batches):
                do { try await shipper.spool.recordAcknowledged(batches) } catch {
                    logger.debug("acknowledged batches not recorded", metadata: ["error": "\(error)"])
                }
            case .report(let report):
                self.report(report)
            }
        }
        return nil
    }

    private func countSent(_ frames: [Frame]) {
        var batches = 0
        for case .batch in frames { batches += 1 }
        guard batches > 0 else { return }
        metrics.batchesSent.increment(by: Int64(batches))
        shipper.status.update { $0.batchesSent += batches }
    }

    /// Logs, counts and shows what the machine reports.
    private func report(_ report: ShipperMachine.Report) {
        switch report {
        case .sessionOpen(let index):
            let endpoint = settings.collectors[index]
            metrics.connected.record(1)
            shipper.status.update { $0.connectedTo = endpoint }
            logger.info("collector session open", metadata: ["collector": "\(endpoint)"])
        case .acknowledged(let ack, let events):
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
        case .drained(let drained):
            shipper.status.update { $0.drained = drained }
        case .connectionEnded(let ending, let index, let retryIn, let movingTo, let unacknowledged):
            connectionEnded(ending, collector: settings.collectors[index], retryIn: retryIn)
            if let movingTo {
                logger.info(
                    "moving to the next collector; unacked batches will be resent there",
                    metadata: [
                        "from": "\(settings.collectors[index])", "collector": "\(settings.collectors[movingTo])",
                        "cause": "\(ending.cause)", "unacked_batches": "\(unacknowledged)",
                    ])
            }
        case .paused(let problem):
            logger.error("shipping paused for a while", metadata: ["problem": "\(problem)", "retry_in": "\(machine.settings.localRetry)"])
            shipper.status.update { $0.lastError = problem }
        case .checkpointFailing(let first):
            if first {
                logger.error(
                    "could not store the spool checkpoint; retrying every second, shipping goes on", metadata: ["error": "\(checkpointError)"])
            }
        case .checkpointStoredAgain(let position):
            logger.notice("spool checkpoint stored again", metadata: ["position": "\(position)"])
        }
    }

    private func connectionEnded(_ ending: ShipperMachine.Ending, collector: HostPort, retryIn: Duration) {
        let retry = "\(retryIn)"
        switch ending {
        case .goaway:
            logger.info("collector sent goaway; reconnecting", metadata: ["collector": "\(collector)", "retry_in": "\(retry)"])
        case .fatal(let error):
            logger.error(
                "collector refused this agent; an operator must act",
                metadata: ["collector": "\(collector)", "error": "\(error)", "retry_in": "\(retry)"])
            shipper.status.update { $0.lastError = error.description }
        case .refused(let reason):
            logger.error(
                "collector connection refused by this agent; an operator must act", metadata: ["reason": "\(reason)", "retry_in": "\(retry)"])
            shipper.status.update { $0.lastError = reason }
        case .failed(let reason):
            logger.warning("collector connection failed", metadata: ["collector": "\(collector)", "reason": "\(reason)", "retry_in": "\(retry)"])
            shipper.status.update { $0.lastError = reason }
        }
    }
}

extension ShipperMachine.Ending {
    /// A word or two for the log.
    var cause: String {
        switch self {
        case .goaway: "goaway"
        case .fatal: "refused by the collector"
        case .refused: "refused by this agent"
        case .failed: "failed"
        }
    }
}
