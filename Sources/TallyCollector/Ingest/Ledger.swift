import NIOPosix
import Synchronization
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
/// Reads may also go to a second, read-only use of the same ledger (`reader`), answered on the
/// caller's thread without the two thread switches of the writer — what keeps a usage or charges
/// call under a millisecond. A read takes that path only when it cannot block: the aggregate log
/// is empty (otherwise the read must fold it first, which writes, and goes to the writer) and no
/// other read holds the reader. WAL readers never wait for the writer.
public final class Ledger: @unchecked Sendable {
    /// The writers not in use; a closure on the pool takes one and gives it back.
    private let free: Mutex<[ConfinedStore]>
    private let all: [ConfinedStore]
    private let pool: NIOThreadPool
    private let reader: Mutex<ConfinedStore?>
    /// The reader's own thread, for a reader whose calls wait on the network.
    private let readerThread: NIOThreadPool?
    /// Why the latest commit failed in the store (a full disk, an I/O error), or nil when the
    /// latest commit succeeded: what `/readyz` reports.
    private let failingCommit = Mutex<LedgerError?>(nil)

    public convenience init(store: any LedgerStore, reader: (any LedgerStore)? = nil) {
        self.init(stores: [store], reader: reader)
    }

    /// `stores`: one or more writers on the same ledger (more than one only for a backend whose
    /// connections can write at once); `reader`: an optional read-only use of it.
    public init(stores: [any LedgerStore], reader: (any LedgerStore)? = nil) {
        precondition(!stores.isEmpty, "a ledger writer needs a store")
        all = stores.map { ConfinedStore(store: $0) }
        free = Mutex(all)
        self.reader = Mutex(reader.map { ConfinedStore(store: $0) })
        self.pool = NIOThreadPool(numberOfThreads: stores.count)
        pool.start()
        if reader?.readsWaitOnNetwork == true {
            let thread = NIOThreadPool(numberOfThreads: 1)
            thread.start()
            readerThread = thread
        } else {
            readerThread = nil
        }
    }

    /// Runs a read-only `body`: on the reader, on this thread, when it can answer without
    /// writing or waiting; otherwise on the writer thread. `body` must not write.
    public func read<Result: Sendable>(
        _ body: @escaping @Sendable (any LedgerStore) throws(LedgerError) -> Result
    ) async throws -> Result {
        if let readerThread {
            // A reader that waits on the network (PostgreSQL) answers on its own thread, never on
            // the caller's (an HTTP handler's) cooperative thread.
            let direct = try await readerThread.runIfActive { [self] in directRead(body) }
            if let direct { return try direct.get() }
            return try await perform(body)
        }
        if let direct = directRead(body) { return try direct.get() }
        return try await perform(body)
    }

    /// The read on the reader, when it is free and the log is empty; nil otherwise.
    private func directRead<Result: Sendable>(
        _ body: @escaping @Sendable (any LedgerStore) throws(LedgerError) -> Result
    ) -> Swift.Result<Result, LedgerError>? {
        reader.withLockIfAvailable { confined -> Swift.Result<Result, LedgerError>? in
            guard let store = confined?.store else { return nil }
            do throws(LedgerError) {
                // One snapshot: the log check and the body see the same committed state, so an
                // empty log stays empty for the body and it never has to fold (write).
                return try store.withSnapshot { () throws(LedgerError) -> Swift.Result<Result, LedgerError>? in
                    guard try !store.hasUnfoldedAggregates() else { return nil }
                    return .success(try body(store))
                }
            } catch {
                return .failure(error)
            }
        } ?? nil
    }

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
            return try body(confined.store)
        }
    }

    /// How many writers commit at once.
    public var writerCount: Int { all.count }

    /// Commits one batch in one transaction and returns its outcome (the stored one for a replay).
    public func commit(_ batch: IncomingBatch) async throws -> BatchOutcome {
        try await commit(PreparedBatch(batch))
    }

    /// Commits a batch prepared by the caller (fingerprints and digest made off the writer thread).
    /// Records whether the store could commit: see ``commitFailure``.
    public func commit(_ batch: PreparedBatch) async throws -> BatchOutcome {
        do {
            let outcome = try await perform { store throws(LedgerError) in try store.commit(batch) }
            failingCommit.withLock { $0 = nil }
            return outcome
        } catch let error as LedgerError {
            // A batch the agent got wrong (a reused or expired sequence, an overflowing sum)
            // says nothing about the store; a refused write does.
            if error.isStoreFailure { failingCommit.withLock { $0 = error } }
            throw error
        }
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
        reader.withLock { $0?.store.close() }
        try? await pool.shutdownGracefully()
        for confined in all { confined.store.close() }
    }
}

/// A store, handed to one writer thread at a time.
// @unchecked: every use goes through `Ledger.perform`, which takes the store off the free
// list for the duration of one closure on a pool thread, so it is never used from two threads
// at once (and each use happens-after the previous one, through the mutex).
private struct ConfinedStore: @unchecked Sendable {
    let store: any LedgerStore
}
