import NIOCore
import Synchronization
public import TallyLedger

// The ledger's commits: the single writer's queue, whose waiting batches commit together (SQLite),
// a pool of writers committing each batch alone (PostgreSQL), what the latest commit says about
// the store (`/readyz`), and the committed batch's way to the disposal thread (``IdleDisposal``).
extension Ledger {
    /// Commits one batch in one transaction and returns its outcome (the stored one for a replay).
    public func commit(_ batch: IncomingBatch) async throws -> BatchOutcome {
        try await commit(PreparedBatch(batch))
    }

    /// Commits a batch prepared by the caller (fingerprints and digest made off the writer thread).
    /// Records whether the store could commit: see ``commitFailure``.
    public func commit(_ batch: PreparedBatch) async throws -> BatchOutcome {
        try await queueCommit(batch).outcome()
    }

    /// Whether commits queued one after another (``queueCommit(_:)``) commit in that order: true
    /// with one writer (SQLite), whose queue is the order; with a pool of writers (PostgreSQL)
    /// two queued commits may run at once, and a caller who needs an order awaits each outcome
    /// before queueing the next.
    public var commitsInQueueOrder: Bool { all.count == 1 }

    /// Queues the commit of `batch` now, behind the commits queued before it, and returns at
    /// once; await ``QueuedCommit/outcome()``. With one writer, the batches that queue up while
    /// it commits are committed together next, in one transaction where the store can
    /// (``LedgerStore/commit(_:)-([PreparedBatch])``): one fsync for them all.
    public func queueCommit(_ batch: PreparedBatch) -> QueuedCommit {
        let queued = QueuedCommit(disposal: disposal)
        guard commitsInQueueOrder else {
            // The batch waits in a take-once hand-off: see `commitAlone(_:returningTo:)`.
            let handOff = HandOff(batch)
            Task { [self] in
                do { queued.resolve(.success(try await commitAlone(handOff, returningTo: queued))) } catch { queued.resolve(.failure(error)) }
            }
            return queued
        }
        // The batch waits in a take-once hand-off: see `commitAlone(_:returningTo:)`.
        let start = commitQueue.withLock { queue in
            queue.waiting.append((HandOff(batch), queued))
            defer { queue.draining = true }
            return !queue.draining
        }
        if start { Task { await drainCommitQueue() } }
        return queued
    }

    /// Commits what is queued, a group at a time, until the queue is empty.
    private func drainCommitQueue() async {
        do {
            try await perform { [self] store in
                while let group = takeCommitGroup() {
                    var batches: [PreparedBatch] = []
                    var waiting: [QueuedCommit] = []
                    for (handOff, queued) in group {
                        guard let batch = handOff.take() else {
                            // Never: each queued batch is taken once. Answered all the same, so
                            // that no caller waits for ever.
                            queued.resolve(.failure(Self.batchTakenTwice))
                            continue
                        }
                        batches.append(batch)
                        waiting.append(queued)
                    }
                    let results = store.commit(batches)
                    groups.withLock { $0 = ($0.groups + 1, $0.batches + batches.count) }
                    // Each batch goes back to its committer, who hands it to the disposal thread
                    // (``IdleDisposal``; see also `commitAlone(_:returningTo:)`): handed over, and the writer's
                    // references dropped, before anyone resumes.
                    for (queued, batch) in zip(waiting, batches) { queued.keep(batch) }
                    batches = []
                    for (position, (queued, result)) in zip(waiting, results).enumerated() {
                        queued.resolve(recorded(result), startsGroup: position == 0)
                    }
                }
            }
        } catch {
            // No writer ran the queue (the ledger is shutting down): every waiting commit fails.
            let group = commitQueue.withLock { queue in
                defer { queue = CommitQueue() }
                return queue.waiting
            }
            for (_, queued) in group { queued.resolve(.failure(error)) }
        }
    }

    /// The next group of queued commits, or nil (and the queue marked idle) when none waits.
    private func takeCommitGroup() -> [(HandOff<PreparedBatch>, QueuedCommit)]? {
        commitQueue.withLock { queue in
            guard !queue.waiting.isEmpty else {
                queue.draining = false
                return nil
            }
            let group = Array(queue.waiting.prefix(Self.commitGroupLimit))
            queue.waiting.removeFirst(group.count)
            return group
        }
    }

    /// How many groups of queued batches the single writer committed, and how many batches
    /// they held (each group one call of ``LedgerStore/commit(_:)-([PreparedBatch])``).
    public var queuedCommitGroups: (groups: Int, batches: Int) { groups.withLock { $0 } }

    /// Commits queued for the single writer and not yet taken by it.
    public var commitsWaiting: Int { commitQueue.withLock { $0.waiting.count } }

    /// At most this many batches in one transaction: half of what a connection may have
    /// prepared (``BatchPipeline/preparedAhead``), so that one agent's next batches are being
    /// prepared while its group commits; and a transaction of many connections' batches would
    /// keep each of them waiting for all the others.
    static let commitGroupLimit = 4

    /// A queued batch found taken already: never expected, answered so that no caller waits.
    private static let batchTakenTwice = LedgerError.database(code: -1, message: "a batch committed twice", context: "scheduling")

    /// A store's result, with whether the store could commit recorded (``commitFailure``).
    private func recorded(_ result: Result<BatchOutcome, LedgerError>) -> Result<BatchOutcome, any Error> {
        switch result {
        case .success(let outcome):
            failingCommit.withLock { $0 = nil }
            return .success(outcome)
        case .failure(let error):
            // A batch the agent got wrong (a reused or expired sequence, an overflowing sum)
            // says nothing about the store; a refused write does.
            if error.isStoreFailure { failingCommit.withLock { $0 = error } }
            return .failure(error)
        }
    }

    /// One batch on whichever writer is free (a pool of writers).
    private func commitAlone(_ handOff: HandOff<PreparedBatch>, returningTo queued: QueuedCommit) async throws -> BatchOutcome {
        // The writer takes the batch from the hand-off and gives it back to the queued commit
        // before the caller resumes; whoever awaits the outcome hands it to the disposal thread
        // (``IdleDisposal``): its events and what was made ahead for it are thousands of
        // allocations, and neither a writer nor the cooperative pool should spend a core on
        // freeing them. A closure capturing the batch would keep it until the pool drops the
        // closure, after resuming the caller, and free it wherever that happened.
        // At the process's own priority, unlike the preparation threads: see `BulkWork`.
        let result = try await perform { store in
            guard let batch = handOff.take() else {
                return Result<BatchOutcome, LedgerError>.failure(Self.batchTakenTwice)
            }
            defer { queued.keep(batch) }
            return Result { () throws(LedgerError) in try store.commit(batch) }
        }
        return try recorded(result).get()
    }

    /// The store's error when the latest commit failed in the store (nil once a commit succeeds
    /// again). While it is set, every commit is failing: the collector is not ready.
    public var commitFailure: LedgerError? { failingCommit.withLock { $0 } }

    /// Not ready while the latest commit failed in the store, with the store's reason; ready
    /// again after the next commit that succeeds (agents resend unacknowledged batches).
    public func readiness() -> CollectorHTTP.Readiness {
        guard let failure = commitFailure else { return .ready }
        return .notReady(reason: "the latest ledger commit failed: \(failure)")
    }
}

/// A value handed to another thread or task, taken once.
final class HandOff<Value: Sendable>: Sendable {
    private let value: Mutex<Value?>

    init(_ value: Value) { self.value = Mutex(value) }

    func take() -> Value? { value.withLock { $0.take() } }
}

/// Batches waiting for the single writer (``Ledger/queueCommit(_:)``).
struct CommitQueue {
    var waiting: [(HandOff<PreparedBatch>, QueuedCommit)] = []
    /// A task is committing the queue (it goes on until the queue is empty).
    var draining = false
}

/// A commit queued on the ledger's writer (``Ledger/queueCommit(_:)``): its outcome, once.
public final class QueuedCommit: Sendable {
    private struct State {
        var result: Result<BatchOutcome, any Error>?
        var waiter: CheckedContinuation<BatchOutcome, any Error>?
        /// The committed batch: whoever awaits the outcome hands it to the disposal thread, so
        /// that neither the writer nor the awaiting task frees it.
        var kept: PreparedBatch?
        var startsGroup = true
    }

    private let state = Mutex(State())
    private let disposal: IdleDisposal

    init(disposal: IdleDisposal) { self.disposal = disposal }

    /// The batch's outcome, or the error that kept it from committing. Await it once.
    public func outcome() async throws -> BatchOutcome {
        defer {
            // Moved, so that the last reference is the disposal's.
            if let kept = state.withLock({ $0.kept.take() }) { disposal.dispose(consume kept) }
        }
        return try await withCheckedThrowingContinuation { continuation in
            let result = state.withLock { state -> Result<BatchOutcome, any Error>? in
                if let result = state.result { return result }
                state.waiter = continuation
                return nil
            }
            if let result { continuation.resume(with: result) }
        }
    }

    func keep(_ batch: PreparedBatch) { state.withLock { $0.kept = batch } }

    /// Whether this batch was the first of the group it was committed with (each group one
    /// transaction, ``Ledger/queueCommit(_:)``).
    public var startsGroup: Bool { state.withLock { $0.startsGroup } }

    func resolve(_ result: Result<BatchOutcome, any Error>, startsGroup: Bool = true) {
        let waiter = state.withLock { state in
            state.result = result
            state.startsGroup = startsGroup
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(with: result)
    }
}
