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
/// Order: a batch's commit starts after the commit of the batch before it ended, so the acks
/// leave in arrival order and the ledger sees a connection's batches in the order the agent cut
/// them, as it did when they were handled one at a time. Once a batch fails (a payload that does
/// not decode, the store down), no later batch of the connection commits.
final class BatchPipeline: Sendable {
    private let ingest: BatchIngest
    private let completions: AsyncStream<ProtocolServer.ConnectionEvent>.Continuation
    /// The last batches handed in, newest last (at most ``preparedAhead``): the next one commits
    /// after the newest, and starts preparing once the oldest has committed.
    private let recent = Mutex<[Task<Void, Never>]>([])
    /// How many batches of a connection may be prepared (or preparing) while its batches before
    /// them are not committed yet. One agent draining a backlog is the case that needs depth: the
    /// writer commits its batches one after another, and a batch whose preparation (at background
    /// priority, `BulkWork`) lost its core for a moment leaves the writer idle. With two, the
    /// writer sat blocked 25–26% of its wall time in `tally-bench agent`'s 2M drain; with four,
    /// 16–17%, which is its fsyncs (six gives the same), and the drain ran 84–98k against
    /// 74–95k events/s in three alternating pairs. The rest of the window waits as received frames
    /// (compressed, about 24 bytes an event) rather than as decoded events (hundreds of bytes
    /// each): a connection holds at most four decoded batches (about 1.2 MB at 1,000 events),
    /// whatever its window.
    static let preparedAhead = 4
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
        recent.withLock { recent in
            let previous = recent.last
            let turnToPrepare = recent.count >= Self.preparedAhead ? recent.first : nil
            let task = Task {
                await turnToPrepare?.value
                let prepared: Result<PreparedBatch, any Error>
                do {
                    prepared = .success(try await ingest.prepare(batch, agent: agent, admits: admits))
                } catch {
                    prepared = .failure(error)
                }
                await previous?.value
                let result: Result<BatchAck, any Error>
                if self.stopped.withLock({ $0 }) {
                    result = .failure(CollectorIngestError(wireError: WireError(.internalError, "a batch before it failed; send it again")))
                } else {
                    do { result = .success(try await ingest.commit(try prepared.get(), sequence: batch.sequence)) } catch { result = .failure(error) }
                }
                if case .failure = result { self.stopped.withLock { $0 = true } }
                completions.yield(.completed(sequence: batch.sequence, result))
            }
            recent.append(task)
            if recent.count > Self.preparedAhead { recent.removeFirst() }
        }
    }

    /// Waits until every batch handed in has been committed or has failed.
    func drain() async {
        let task = recent.withLock { $0.last }
        await task?.value
    }
}
