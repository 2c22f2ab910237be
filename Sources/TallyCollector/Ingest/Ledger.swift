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
    let all: [ConfinedStore]
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
    let failingCommit = Mutex<LedgerError?>(nil)
    /// The writers' pure commit steps, done by ``prepare(_:)``'s callers (``speculate(_:)``).
    private let speculator: BatchSpeculator?
    /// Commits waiting for the single writer, in the order they were queued.
    let commitQueue = Mutex(CommitQueue())
    let groups = Mutex((groups: 0, batches: 0))
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
struct ConfinedStore: @unchecked Sendable {
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
