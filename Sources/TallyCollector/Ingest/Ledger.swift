import Glibc
import NIOCore
import NIOPosix
import Synchronization
import TallyCore
public import TallyLedger

/// The collector's ledger: its writers and its reader. Runs every ledger operation on dedicated
/// threads, never on an event loop or the cooperative pool: store calls block (SQLite on fsync,
/// PostgreSQL on its round trips).
///
/// One writer for SQLite (one file, one writer at a time: its operations run in order on one
/// thread). For PostgreSQL, a pool of writers (`pool_size`), each a store with its own
/// connection confined to one thread at a time, so commits from several agents proceed in
/// parallel, as the database allows; callers `await` a closure that runs on whichever writer
/// is free.
///
/// Reads go to read-only uses of the same ledger (`readers`), answered on the caller's thread
/// without the two thread switches of the writer — what keeps a usage or charges call under a
/// millisecond. A reader that merges the unfolded aggregate log into its answers
/// (``LedgerStore/mergeUnfoldedLogOnRead()``: SQLite and PostgreSQL) answers whatever the
/// writer is doing, in its own snapshot, and its aggregate reads never fold. On PostgreSQL a read
/// it cannot merge (the reconciliation, folded from the log there) answers
/// ``TallyLedger/LedgerError/readNeedsFold(_:)`` while the log has rows, and goes to a writer,
/// which folds first. A reader that cannot merge answers only when the aggregate log is empty.
/// A read finding every reader busy goes to the writer.
public final class Ledger: @unchecked Sendable {
    /// The writers not in use; a closure on the pool takes one and gives it back.
    private let free: Mutex<[ConfinedStore]>
    private let all: [ConfinedStore]
    private let pool: NIOThreadPool
    /// Threads for the CPU work of turning a received batch into a ``PreparedBatch``.
    private let preparation: NIOThreadPool
    /// Where committed batches are freed (see ``IdleDisposal``).
    let disposal = IdleDisposal()
    /// The readers not in use.
    private let readers: Mutex<[ConfinedStore]>
    private let readerStores: [ConfinedStore]
    /// The reader's own thread, for a reader whose calls wait on the network.
    private let readerThread: NIOThreadPool?
    /// Why the latest commit failed in the store (a full disk, an I/O error), or nil when the
    /// latest commit succeeded: what `/readyz` reports.
    private let failingCommit = Mutex<LedgerError?>(nil)
    /// The writers' pure commit steps, done by ``prepare(_:)``'s callers (``speculate(_:)``).
    private let speculator: BatchSpeculator?
    /// Commits waiting for the single writer, in the order they were queued.
    private let commitQueue = Mutex(CommitQueue())
    private let groups = Mutex((groups: 0, batches: 0))
    /// The writer's committed log cells, merged on the preparation threads between batches.
    private let merger: LogMerger?
    /// Checkpoints the writer's write-ahead log off its thread (SQLite).
    private let checkpointer: WALCheckpointer?

    public convenience init(store: any LedgerStore, reader: (any LedgerStore)? = nil) {
        self.init(stores: [store], readers: reader.map { [$0] } ?? [])
    }

    public convenience init(stores: [any LedgerStore], reader: (any LedgerStore)? = nil) {
        self.init(stores: stores, readers: reader.map { [$0] } ?? [])
    }

    /// `stores`: one or more writers on the same ledger (more than one only for a backend whose
    /// connections can write at once); `readers`: read-only uses of it (none: every read goes to
    /// a writer).
    public init(stores: [any LedgerStore], readers: [any LedgerStore]) {
        precondition(!stores.isEmpty, "a ledger writer needs a store")
        speculator = stores[0].batchSpeculator()
        merger = stores[0].logMerger()
        // Started here, stopped by the store's close.
        checkpointer = stores[0].walCheckpointer()
        all = stores.map { ConfinedStore(store: $0) }
        free = Mutex(all)
        readerStores = readers.map { ConfinedStore(store: $0, mergesUnfoldedLog: $0.mergeUnfoldedLogOnRead()) }
        self.readers = Mutex(readerStores)
        self.pool = NIOThreadPool(numberOfThreads: stores.count)
        pool.start()
        preparation = NIOThreadPool(numberOfThreads: System.coreCount)
        preparation.start()
        if readers.contains(where: \.readsWaitOnNetwork) {
            let thread = NIOThreadPool(numberOfThreads: readers.count)
            thread.start()
            readerThread = thread
        } else {
            readerThread = nil
        }
    }

    /// How often the collector's upkeep folds the aggregate log (``LedgerUpkeep``). Every five
    /// seconds where reads wait on the network (PostgreSQL): there a read that finds the log
    /// holding what it cannot merge asks a writer to fold first. Every minute where the readers
    /// merge the unfolded log in their own snapshot and never wait for a fold (SQLite): there the
    /// schedule only folds what an idle collector left, and under ingest the writer folds when a
    /// fold is worth its cost (`aggregateBufferCells`). Folding every five seconds there held the
    /// writer, and every commit behind it, for most of a second each time during a drain.
    public var upkeepFoldInterval: Duration { readerThread == nil ? .seconds(60) : .seconds(5) }

    /// Runs a read-only `body`: on the reader, on this thread, when it can answer without
    /// writing or waiting; otherwise on the writer thread. `body` must not write.
    public func read<Result: Sendable>(
        _ body: @escaping @Sendable (any LedgerStore) throws(LedgerError) -> Result
    ) async throws -> Result {
        if let readerThread {
            // A reader that waits on the network (PostgreSQL) answers on its own thread, never on
            // the caller's (an HTTP handler's) cooperative thread.
            let direct = try await readerThread.runIfActive { [self] in
                ThreadName.set("tally-reader")
                return directRead(body)
            }
            if let direct { return try direct.get() }
            return try await perform(body)
        }
        if let direct = directRead(body) { return try direct.get() }
        return try await perform(body)
    }

    /// Runs a read-only `body` on this thread if a reader is free, can answer without writing or
    /// waiting, and answers without the network (SQLite's readers); nil otherwise, when the
    /// caller should use ``read(_:)``. For a caller that must not suspend: the HTTP API answers
    /// reads on the event loop that read the request (``DirectReads``).
    public func readNow<Result: Sendable>(
        _ body: @escaping @Sendable (any LedgerStore) throws(LedgerError) -> Result
    ) -> Swift.Result<Result, LedgerError>? {
        guard readerThread == nil else { return nil }
        return directRead(body)
    }

    /// The read on a free reader that can answer without writing; nil when none is free or the
    /// free one would have to fold first.
    private func directRead<Result: Sendable>(
        _ body: @escaping @Sendable (any LedgerStore) throws(LedgerError) -> Result
    ) -> Swift.Result<Result, LedgerError>? {
        guard let confined = readers.withLock({ $0.popLast() }) else { return nil }
        defer { readers.withLock { $0.append(confined) } }
        let store = confined.store
        do throws(LedgerError) {
            // One snapshot: the log check (or the merge of the log) and the body see the same
            // committed state, so the body never has to fold (write).
            return try store.withSnapshot { () throws(LedgerError) -> Swift.Result<Result, LedgerError>? in
                if !confined.mergesUnfoldedLog {
                    guard try !store.hasUnfoldedAggregates() else { return nil }
                }
                return .success(try body(store))
            }
        } catch .readNeedsFold {
            // A read the reader cannot merge (PostgreSQL's reconciliation is folded from the
            // log): a writer folds first and answers.
            return nil
        } catch {
            return .failure(error)
        }
    }

    /// Runs the CPU work that comes before a commit (decompressing, decoding, validating and
    /// fingerprinting a batch) on the preparation threads, one per core. Not on Swift's
    /// cooperative pool: it has one thread per core too, and batches being prepared there would
    /// keep every HTTP read waiting until one finishes. The kernel shares the cores between these
    /// threads and the readers instead, and a reader that wakes is scheduled at once.
    public func prepare<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await preparation.runIfActive { [merger] in
            BulkWork.yieldToReads()
            ThreadName.set("tally-prepare")
            defer {
                // Between the batch and the merge, as between the batch's own steps.
                YieldPoint.between()
                merger?.mergeQueued()
            }
            return try body()
        }
    }

    /// `batch` with the commit's pure steps done (``LedgerSpeculation``): call it on a
    /// preparation thread, so the writer thread has less to do.
    public func speculate(_ batch: PreparedBatch) -> PreparedBatch { speculator?.speculate(batch) ?? batch }

    /// Runs `body` with a free writer, on its thread.
    public func perform<Result: Sendable>(
        _ body: @escaping @Sendable (any LedgerStore) throws(LedgerError) -> Result
    ) async throws -> Result {
        try await pool.runIfActive { [self] in
            // The pool runs at most as many closures at once as there are writers, so one is free.
            guard let confined = free.withLock({ $0.popLast() }) else {
                throw LedgerError.database(code: -1, message: "no free ledger writer", context: "scheduling")
            }
            defer { free.withLock { $0.append(confined) } }
            ThreadName.set("tally-writer")
            return try body(confined.store)
        }
    }

    /// The checkpoints of the writer's write-ahead log so far (nil: its store has none).
    public var walCheckpoints: WALCheckpointer.Checkpoints? { checkpointer?.checkpoints }

    /// How many writers commit at once.
    public var writerCount: Int { all.count }

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

    /// Closes the stores after every queued operation, then stops the threads.
    public func shutdown() async {
        try? await readerThread?.shutdownGracefully()
        for confined in readerStores { confined.store.close() }
        try? await pool.shutdownGracefully()
        try? await preparation.shutdownGracefully()
        await disposal.shutdown()
        for confined in all { confined.store.close() }
    }
}

/// A store, handed to one writer thread at a time.
// @unchecked: every use goes through `Ledger.perform`, which takes the store off the free
// list for the duration of one closure on a pool thread, so it is never used from two threads
// at once (and each use happens-after the previous one, through the mutex).
private struct ConfinedStore: @unchecked Sendable {
    let store: any LedgerStore
    /// A reader that merges the unfolded log (``LedgerStore/mergeUnfoldedLogOnRead()``).
    var mergesUnfoldedLog = false
}

/// Preparing batches runs at a lower scheduling priority than the threads that answer reads
/// (``BackgroundPriority``): on a busy machine the kernel then gives a read the core it needs,
/// instead of sharing it evenly with every batch in progress (issue 12: a read during
/// full-speed ingest answers within 2× of its idle time). A bulk thread that is already running
/// is not stopped for a read that wakes on its core until the next tick, so the bulk work also
/// yields between its steps (`YieldPoint`).
///
/// The ledger writer is not lowered. It is the one thread the end-to-end rate waits on, and at
/// nice 10 it lost every contest for a core to the threads at the default priority — the
/// agent's, the cooperative pool's — and waited for one a quarter of its wall time during a
/// drain (`tally-bench agent`'s writer row: 59% running, 24% waiting for a core). At the
/// default priority it waits 12–14%, and the drain ran 7–26% faster in six of six alternating
/// runs, with the charges p99 under the drain unchanged (3.0–4.0 ms against 3.5–3.7 ms). Its
/// yields (`YieldPoint`, every 128 events) stay: they are what lets a read onto its core.
enum BulkWork {
    /// Lowers the calling thread's priority; called once per batch on the preparation threads.
    static func yieldToReads() { BackgroundPriority.lowerCurrentThread() }
}

/// A value handed to another thread or task, taken once.
final class HandOff<Value: Sendable>: Sendable {
    private let value: Mutex<Value?>

    init(_ value: Value) { self.value = Mutex(value) }

    func take() -> Value? { value.withLock { $0.take() } }
}

/// Batches waiting for the single writer (``Ledger/queueCommit(_:)``).
private struct CommitQueue {
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
    private let disposal: IdleDisposal?

    init(disposal: IdleDisposal? = nil) { self.disposal = disposal }

    /// The batch's outcome, or the error that kept it from committing. Await it once.
    public func outcome() async throws -> BatchOutcome {
        defer {
            // Moved, so that the last reference is the disposal's.
            if let kept = state.withLock({ $0.kept.take() }), let disposal { disposal.dispose(consume kept) }
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
