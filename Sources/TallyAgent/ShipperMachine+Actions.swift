import TallySpool
import TallyWire

/// What ``ShipperMachine`` is told (its settings) and what it answers: how a connection ended,
/// the actions the shipper carries out, and the reports it logs, counts and shows.
extension ShipperMachine {
    struct Settings: Sendable {
        var window: Int
        var maxEvents: Int
        var linger: Duration
        /// At most this many events per second (nil: as fast as the collector acks).
        var eventsPerSecond: Int?
        /// Stop once the spool is empty and every batch is acked.
        var stopWhenDrained: Bool
        var shutdownGrace: Duration
        var handshakeTimeout: Duration
        /// A batch sent and not acknowledged for this long ends the connection (its ack was lost,
        /// or the collector hangs); every unacked batch is resent on the next one.
        var ackTimeout: Duration = .seconds(30)
        var reconnect: AgentConfig.Reconnect
        /// How long shipping pauses after a local failure (a spool read, a sequence lease), and
        /// how often a failed checkpoint is retried.
        var localRetry: Duration = .seconds(1)
    }

    /// How one collector connection ended.
    enum Ending: Sendable, Hashable {
        case failed(String)
        /// This agent refused the connection (a plain one to a remote collector): back off long.
        case refused(String)
        /// The collector refused this agent (bad key, unknown agent, version): back off long.
        case fatal(WireError)
        case goaway(retryAfter: Duration?)
    }

    /// What the shipper must do.
    enum Action: Sendable, Hashable {
        /// Open a connection to the collector at this index; answer ``connected(agentNonce:now:)``
        /// or ``connectFailed(_:now:)``.
        case connect(collector: Int)
        /// Write these frames, in order; a failed write is ``disconnected(_:now:)``.
        case send([Frame])
        /// Close the current connection.
        case close
        /// Read up to `maxEvents` events from `from`; answer ``spoolRead(events:end:full:now:)``, or
        /// ``localFailure(_:now:)``.
        case readSpool(from: SpoolPosition, maxEvents: Int)
        /// Lease the next sequence and encode the events just read as one batch; answer
        /// ``batchCut(_:now:)``, or ``localFailure(_:now:)`` (nothing was cut).
        case cutBatch
        /// Store the spool checkpoint: everything before `upTo` is acknowledged. Answer
        /// ``spoolFreed(upTo:)`` or ``spoolFreeFailed(upTo:now:)``.
        case freeSpool(upTo: SpoolPosition)
        /// Record which batches shipped the data about to be freed (`tallyctl spool inspect
        /// --id` names them); best effort, no answer.
        case recordAcknowledged([AcknowledgedBatch])
        /// Something to log, count or show in the health answer.
        case report(Report)
        /// Stop shipping (after the actions before it).
        case stop
        /// An invariant broke: stop with this error rather than risk a batch under two sequences.
        case abort(String)
    }

    enum Report: Sendable, Hashable {
        case sessionOpen(collector: Int)
        case acknowledged(BatchAck, events: Int)
        /// The spool was found empty with nothing in flight (true), or had data again (false).
        case drained(Bool)
        case connectionEnded(Ending, collector: Int, retryIn: Duration, movingTo: Int?, unacknowledged: Int)
        /// Shipping pauses for a while after a local failure.
        case paused(String)
        /// The checkpoint could not be stored; `first` for the first failure of a spell.
        case checkpointFailing(first: Bool)
        case checkpointStoredAgain(SpoolPosition)
    }
}
