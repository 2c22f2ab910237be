import Logging
import NIOCore
import Synchronization
public import TallyCore
public import TallyLedger
public import TallyWire

/// Turns one batch frame into one committed ledger transaction and the ack to send.
///
/// It decompresses and decodes the payload within the session's limits, validates every event
/// (field limits, future skew, the agent key's tenant allow-list) — the collector never trusts
/// the agent's validation — and commits all of them, valid or not, so that
/// `received = accepted + duplicate + late + rejected` holds in the ledger. Fingerprints are
/// recomputed here, never taken from the agent.
///
/// The two halves are separate so that a connection can prepare its next batches while the
/// writer commits the current one (``BatchPipeline``): ``prepare(_:agent:admits:)`` may run for
/// several batches of one connection at once, each with a zstd context of its own from a small
/// per-connection pool, and ``commit(_:sequence:)`` is called in the order the batches arrived.
public final class BatchIngest: Sendable {
    private let decoders: Mutex<[BatchPayloadDecoder]>
    private let limits: SessionLimits
    private let ledger: Ledger
    private let eventLimits: EventLimits
    private let metrics: CollectorMetrics
    private let clock: @Sendable () -> EventTime

    public init(
        limits: SessionLimits, eventLimits: EventLimits, ledger: Ledger, metrics: CollectorMetrics,
        clock: @escaping @Sendable () -> EventTime = { EventTime.now() }
    ) throws(WireError) {
        // One context made now, so that a collector that cannot make one fails at connect time.
        self.decoders = Mutex([try BatchPayloadDecoder(limits: limits)])
        self.limits = limits
        self.ledger = ledger
        self.eventLimits = eventLimits
        self.metrics = metrics
        self.clock = clock
    }

    /// Processes a batch from `agent` start to end; `admits` is the agent key's tenant allow-list.
    public func process(_ batch: Batch, agent: String, admits: @escaping @Sendable (String) -> Bool) async throws -> BatchAck {
        try await commit(try await prepare(batch, agent: agent, admits: admits), sequence: batch.sequence)
    }

    /// The CPU work before the commit: decompress, decode, validate, fingerprint, and the
    /// commit's pure steps. It runs on the ledger's preparation threads, never on Swift's
    /// cooperative pool, where a few batches at once would hold up every HTTP read behind them
    /// (issue 12: reads under ingest).
    public func prepare(_ batch: Batch, agent: String, admits: @escaping @Sendable (String) -> Bool) async throws -> PreparedBatch {
        let now = clock()
        let limits = eventLimits
        let metrics = self.metrics
        let ledger = self.ledger
        let decoder = try takeDecoder()
        defer { decoders.withLock { $0.append(decoder.decoder) } }
        return try await ledger.prepare { () throws -> PreparedBatch in
            let events: [UsageEvent]
            do throws(WireError) {
                events = try decoder.decoder.decode(batch.payload)
            } catch {
                // A payload that does not decode is a protocol error (SPEC §5.4): nothing is
                // written, and the agent keeps the batch in its spool.
                metrics.malformedPayloads.increment()
                throw CollectorIngestError(wireError: error)
            }
            // Decoding, validating, fingerprinting and the commit's pure steps each take a
            // fraction of a millisecond for a batch: a read waiting for this core runs between
            // them (YieldPoint).
            YieldPoint.between()
            let incoming = events.enumerated().map { step, event -> IncomingEvent in
                YieldPoint.after(step: step, every: 64)
                do throws(EventRejection) {
                    try event.validate(limits: limits, now: now)
                    guard admits(event.tenant) else {
                        throw EventRejection(.invalidField, field: "tenant", "tenant '\(event.tenant)' is not allowed for this agent's key")
                    }
                    return .valid(event)
                } catch {
                    return .invalid(
                        InvalidEvent(error, tenant: event.tenant, metric: event.metric, timestamp: event.timestamp, id: event.id))
                }
            }
            YieldPoint.between()
            // Fingerprints and the digest are made here, in parallel across connections; the
            // writer thread only writes.
            let prepared = PreparedBatch(IncomingBatch(agent: agent, sequence: batch.sequence, receivedAt: now, events: incoming))
            YieldPoint.between()
            // ... and so are the commit's pure steps (classification, plan, log row).
            return ledger.speculate(prepared)
        }
    }

    /// Commits a prepared batch and returns its ack.
    public func commit(_ prepared: PreparedBatch, sequence: UInt64) async throws -> BatchAck {
        try await ack(queue(prepared), sequence: sequence)
    }

    /// Whether commits queued one after another commit in that order (``Ledger/commitsInQueueOrder``).
    public var commitsInQueueOrder: Bool { ledger.commitsInQueueOrder }

    /// Queues the commit of a prepared batch now (``Ledger/queueCommit(_:)``); ``ack(_:sequence:)``
    /// awaits it.
    public func queue(_ prepared: PreparedBatch) -> Queued { Queued(commit: ledger.queueCommit(prepared), started: .now) }

    /// A queued commit and when it was queued.
    public struct Queued: Sendable {
        let commit: QueuedCommit
        let started: ContinuousClock.Instant
    }

    /// The ack of a queued commit, once it committed.
    public func ack(_ queued: Queued, sequence: UInt64) async throws -> BatchAck {
        let outcome: BatchOutcome
        do {
            outcome = try await queued.commit.outcome()
        } catch LedgerError.sequenceReused {
            throw CollectorIngestError(
                wireError: WireError(.sequenceReused, "batch \(sequence) was already committed with different events"))
        } catch let error as LedgerError where error.isStoreFailure {
            metrics.commitFailures.increment()
            metrics.ledgerWritable.record(0)
            throw error
        }
        metrics.ledgerWritable.record(1)
        if queued.commit.startsGroup { metrics.commitGroups.increment() }
        metrics.commitLatency.recordNanoseconds((ContinuousClock.now - queued.started).nanoseconds)
        metrics.record(outcome)
        return BatchAck(outcome: outcome, sequence: sequence)
    }

    /// A free decoder of this connection, or a new one: at most as many exist as batches were
    /// ever prepared at once (``BatchPipeline/preparedAhead`` bounds that).
    private func takeDecoder() throws -> DecoderInUse {
        if let free = decoders.withLock({ $0.popLast() }) { return DecoderInUse(decoder: free) }
        return DecoderInUse(decoder: try BatchPayloadDecoder(limits: limits))
    }
}

/// A payload decoder (it owns a zstd context), handed to a preparation thread.
// @unchecked: a decoder is taken out of the pool for one preparation and put back after it, so
// one thread at a time uses it, each use after the previous one completed.
private struct DecoderInUse: @unchecked Sendable {
    let decoder: BatchPayloadDecoder
}

extension BatchAck {
    /// The ack for a committed ledger outcome.
    public init(outcome: BatchOutcome, sequence: UInt64) {
        self.init(
            sequence: sequence, status: .committed, accepted: UInt32(clamping: outcome.accepted),
            duplicate: UInt32(clamping: outcome.duplicate), late: UInt32(clamping: outcome.late),
            rejected: UInt32(clamping: outcome.rejected),
            rejections: outcome.rejections.map { Rejection(index: UInt32(clamping: $0.index), reason: $0.reason) })
    }
}
