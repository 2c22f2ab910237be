import NIOPosix
public import TallyLedger

/// Runs every ledger operation on one dedicated thread, in order.
///
/// SQLite connections are not thread-safe and each commit blocks on fsync, so the store is never
/// touched from an event loop or a cooperative-pool thread: callers `await` a closure that runs
/// on this writer's single thread.
public final class LedgerWriter: @unchecked Sendable {
    private let store: ConfinedStore
    private let pool: NIOThreadPool

    public init(store: any LedgerStore) {
        self.store = ConfinedStore(store: store)
        self.pool = NIOThreadPool(numberOfThreads: 1)
        pool.start()
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
    public func commit(_ batch: PreparedBatch) async throws -> BatchOutcome {
        try await perform { store throws(LedgerError) in try store.commit(batch) }
    }

    /// Closes the store after every queued operation, then stops the thread.
    public func shutdown() async {
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
