import Synchronization
import TallyLedger
import TallyWire

/// One connection's batches on their way through the ledger: each batch is prepared (decoded,
/// validated, fingerprinted, classified) as soon as it arrives, while the batches before it
/// commit, and the commits happen one after another in the order the batches arrived; each
/// outcome goes back to the connection's loop as a ``ProtocolServer/ConnectionEvent/completed(sequence:_:)``.
///
/// Before, a connection handled one batch at a time: decode, then commit, then ack, then read
/// the next frame. The ledger writer then waited for the preparation of every batch and the
/// preparation threads for every commit, and one agent draining a backlog kept the writer a third
/// busy (`tally-bench agent`'s drain). The agent keeps up to its window of batches unacknowledged,
/// and the session bounds them by the collector's window (``CollectorSession``), so at most that
/// many batches of one connection are in the pipeline, prepared or not.
///
/// Order: the acks leave in arrival order, and the ledger sees a connection's batches in the
/// order the agent cut them, as it did when they were handled one at a time. With one ledger
/// writer (SQLite), whose queue keeps order, a batch's commit is queued as soon as the batch is
/// prepared and the one before it queued: batches that queue up while the writer commits are
/// committed together next, in one transaction with one fsync (``Ledger/queueCommit(_:)``).
/// With a pool of writers (PostgreSQL), a batch's commit starts after the commit of the batch
/// before it ended. Once a batch fails (a payload that does not decode, the store down), no
/// later batch of the connection commits, with one exception: a batch queued while the one
/// before it was committing may commit when that one's commit fails (the store down, a reused
/// sequence). The session closes the connection at the first failure and the agent resends
/// every batch not acknowledged, so such a batch is found committed (its stored outcome).
final class BatchPipeline: Sendable {
    private let ingest: BatchIngest
    private let completions: AsyncStream<ProtocolServer.ConnectionEvent>.Continuation
    /// The last batches handed in, newest last (at most ``preparedAhead``): the next one commits
    /// after the newest, and starts preparing once the oldest has committed.
    private let recent = Mutex<[Stage]>([])
    /// How many batches of a connection may be prepared (or preparing) while its batches before
    /// them are not committed yet. One agent draining a backlog is the case that needs depth: a
    /// batch whose preparation (at background priority, `BulkWork`) lost its core for a moment
    /// leaves the writer idle. Committed one at a time, two left the writer blocked 25–26% of its
    /// wall time in `tally-bench agent`'s 2M drain and four 16–17%, its fsyncs. Committed in
    /// groups (``Ledger/queueCommit(_:)``), the writer takes several at once, and the next ones
    /// must be prepared meanwhile: with four (groups of up to eight) the drain was no faster than
    /// one at a time, with eight and groups of up to four it ran 126,774–138,648 against
    /// 101,336–112,018 events/s one at a time (alternating runs), the writer blocked 13% of its
    /// time. The rest of the window waits as received frames (compressed, about 24 bytes an
    /// event) rather than as decoded events (hundreds of bytes each): a connection holds at most
    /// eight decoded batches, whatever its window.
    static let preparedAhead = 8
    /// The compressed bytes of the batches a connection may have prepared (or preparing) while
    /// the ones before them are not committed, the new one included: a second bound beside
    /// ``preparedAhead``, so that what a connection holds decoded (about 2.4 MB for eight batches
    /// of 1,000 reference events, ~24 bytes each on the wire) does not grow with the batch size.
    /// Agents cut batches of up to 4,000 events by default, so about three are prepared ahead;
    /// a batch larger than this alone waits for the one before it to commit.
    static let preparedAheadBytes = 384 << 10
    /// A batch failed: the session closes the connection, and no later batch of it commits
    /// (as when they were handled one at a time: the agent resends them all after reconnecting).
    private let stopped = Mutex(false)

    init(ingest: BatchIngest, completions: AsyncStream<ProtocolServer.ConnectionEvent>.Continuation) {
        self.ingest = ingest
        self.completions = completions
    }

    /// Starts `batch` through the pipeline; returns at once.
    func submit(_ batch: Batch, agent: String, admits: @escaping @Sendable (String) -> Bool) {
        let ingest = self.ingest
        let completions = self.completions
        let inQueueOrder = ingest.commitsInQueueOrder
        recent.withLock { recent in
            let previous = recent.last
            // The newest batch before this one whose commit this one's preparation waits for:
            // the eighth before it, or the first at which the bytes pass the budget.
            let bytes = batch.payload.readableBytes
            var waitsFor: Int? = nil
            var ahead = bytes
            for index in recent.indices.reversed() {
                ahead += recent[index].bytes
                if recent.count - index >= Self.preparedAhead || ahead > Self.preparedAheadBytes {
                    waitsFor = index
                    break
                }
            }
            let turnToPrepare = waitsFor.map { recent[$0] }
            // Batches older than that one are past every later batch's wait too.
            if let waitsFor { recent.removeFirst(waitsFor) }
            // Prepared, then (in queue order) queued once the batch before it is.
            let queued = Task { () -> Pending in
                await turnToPrepare?.completed.value
                let prepared: Result<PreparedBatch, any Error>
                do {
                    prepared = .success(try await ingest.prepare(batch, agent: agent, admits: admits))
                } catch {
                    prepared = .failure(error)
                }
                guard inQueueOrder else { return .prepared(HandOff(prepared)) }
                _ = await previous?.queued.value
                if self.stopped.withLock({ $0 }) { return .failed(Self.earlierFailure) }
                switch prepared {
                case .success(let prepared): return .queued(ingest.queue(prepared))
                case .failure(let error):
                    // Known now, before any later batch is queued: none of them commits.
                    self.stopped.withLock { $0 = true }
                    return .failed(error)
                }
            }
            let completed = Task {
                let pending = await queued.value
                if case .prepared = pending { await previous?.completed.value }
                let result: Result<BatchAck, any Error>
                switch pending {
                case .queued(let commit):
                    do { result = .success(try await ingest.ack(commit, sequence: batch.sequence)) } catch { result = .failure(error) }
                case .prepared(let handOff):
                    if !self.stopped.withLock({ $0 }), let prepared = handOff.take() {
                        do { result = .success(try await ingest.commit(try prepared.get(), sequence: batch.sequence)) } catch {
                            result = .failure(error)
                        }
                    } else {
                        result = .failure(Self.earlierFailure)
                    }
                case .failed(let error): result = .failure(error)
                }
                // The acks in arrival order.
                await previous?.completed.value
                if case .failure = result { self.stopped.withLock { $0 = true } }
                completions.yield(.completed(sequence: batch.sequence, result))
            }
            recent.append(Stage(queued: queued, completed: completed, bytes: bytes))
            if recent.count > Self.preparedAhead { recent.removeFirst() }
        }
    }

    private static var earlierFailure: CollectorIngestError {
        CollectorIngestError(wireError: WireError(.internalError, "a batch before it failed; send it again"))
    }

    /// A batch after its preparation: its commit queued, or (commits not kept in queue order)
    /// prepared to commit after the batch before it (taken once, so that the task's value
    /// does not keep the decoded batch), or failed.
    private enum Pending: Sendable {
        case queued(BatchIngest.Queued)
        case prepared(HandOff<Result<PreparedBatch, any Error>>)
        case failed(any Error)
    }

    /// A batch's two tasks: prepared and queued; completed (committed or failed, and its
    /// outcome handed to the connection).
    private struct Stage: Sendable {
        let queued: Task<Pending, Never>
        let completed: Task<Void, Never>
        /// The batch's compressed payload bytes (``preparedAheadBytes``).
        let bytes: Int
    }

    /// Waits until every batch handed in has been committed or has failed.
    func drain() async {
        let task = recent.withLock { $0.last }
        await task?.completed.value
    }
}
