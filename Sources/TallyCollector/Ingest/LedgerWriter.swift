import NIOPosix
import Synchronization
public import TallyLedger

/// Runs every ledger operation on one dedicated thread, in order.
///
/// SQLite connections are not thread-safe and each commit blocks on fsync, so the store is never
/// touched from an event loop or a cooperative-pool thread: callers `await` a closure that runs
/// on this writer's single thread.
///
/// Reads may also go to a second, read-only use of the same ledger (`reader`), answered on the
/// caller's thread without the two thread switches of the writer — what keeps a usage or charges
/// call under a millisecond. A read takes that path only when it cannot block: the aggregate log
/// is empty (otherwise the read must fold it first, which writes, and goes to the writer) and no
/// other read holds the reader. WAL readers never wait for the writer.
public final class LedgerWriter: @unchecked Sendable {
    private let store: ConfinedStore
    private let pool: NIOThreadPool
    private let reader: Mutex<ConfinedStore?>
    /// Why the latest commit failed in the store (a full disk, an I/O error), or nil when the
    /// latest commit succeeded: what `/readyz` reports.
    private let failingCommit = Mutex<LedgerError?>(nil)

    public init(store: any LedgerStore, reader: (any LedgerStore)? = nil) {
        self.store = ConfinedStore(store: store)
        self.reader = Mutex(reader.map { ConfinedStore(store: $0) })
        self.pool = NIOThreadPool(numberOfThreads: 1)
        pool.start()
    }

    /// Runs a read-only `body`: on the reader, on this thread, when it can answer without
    /// writing or waiting; otherwise on the writer thread. `body` must not write.
    public func read<Result: Sendable>(
        _ body: @escaping @Sendable (any LedgerStore) throws(LedgerError) -> Result
    ) async throws -> Result {
        let direct: Swift.Result<Result, LedgerError>? = reader.withLockIfAvailable { confined in
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
        if let direct { return try direct.get() }
        return try await perform(body)
    }

    /// Runs `body` with the store on the writer thread.
    public func perform<Result: Sendable>(
        _ body: @escaping @Sendable (any LedgerStore) throws(LedgerError) -> Result
    ) async throws -> Result {
        let store = self.store
        return try await pool.runIfActive {
            try body(store.store)
        }
    }

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

    /// Closes the store after every queued operation, then stops the thread.
    public func shutdown() async {
        reader.withLock { $0?.store.close() }
        _ = try? await perform { store throws(LedgerError) in store.close() }
        try? await pool.shutdownGracefully()
    }
}

/// The store, handed only to the writer's single thread.
// @unchecked: every use goes through `LedgerWriter.perform`, which runs on one dedicated thread,
// so the store is never used from two threads at once.
private struct ConfinedStore: @unchecked Sendable {
    let store: any LedgerStore
}
