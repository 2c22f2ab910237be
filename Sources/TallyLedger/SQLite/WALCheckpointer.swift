import CSQLite
import NIOPosix
import Synchronization
import TallyCore

/// Checkpoints the ledger's write-ahead log on a thread of its own, so that the ledger writer
/// only appends to the log and never copies it back into the database file.
///
/// Before, SQLite's auto-checkpoint ran inside the commit that took the log past 16,384 pages
/// (`wal_autocheckpoint`): reading the log's pages back, writing them into the database file
/// and syncing it, on the writer thread, which the end-to-end rate waits on. A profile of the
/// writer during `tally-bench agent`'s drain put 13% of its CPU there.
///
/// How: the writer's connection gets a commit hook (`sqlite3_wal_hook`, which replaces the
/// auto-checkpoint). Once the log holds ``threshold`` pages, the hook asks this object's thread
/// for a passive checkpoint (`SQLITE_CHECKPOINT_PASSIVE`) on its own connection. A passive
/// checkpoint takes no lock the writer or the readers wait on: it copies the pages no reader
/// still needs, and the writer restarts the log from its beginning at its next transaction once
/// every page is copied — as with the auto-checkpoint, whose checkpoints are passive too.
///
/// Bounded all the same: when the log reaches four times the threshold (this thread stopped, or
/// starved by a busy machine, since it runs at background priority), the writer checkpoints
/// itself in the hook, exactly as the auto-checkpoint did. Durability does not change: a commit
/// is durable once its log pages are synced, before any checkpoint; the checkpoint connection
/// syncs the log before copying and the database file after, as `synchronous = FULL` does.
public final class WALCheckpointer: Sendable {
    /// Log pages that start a checkpoint: SQLite's `wal_autocheckpoint` of the ledger
    /// (`SQLiteSchema.pragmas`).
    public let threshold: Int32
    let path: String
    private let thread: NIOThreadPool
    private let state = Mutex(State())
    /// The checkpoint connection, used on ``thread`` only (one thread, one job at a time) and
    /// closed after the thread stopped.
    private let connection: Confined

    struct State {
        var scheduled = false
        var stopped = false
        var checkpoints = Checkpoints()
    }

    /// How many checkpoints ran, and where.
    public struct Checkpoints: Sendable, Equatable {
        /// On this object's thread.
        public var background = 0
        /// On the writer, in its commit, because the log had grown to four times the threshold.
        public var writer = 0
        /// Background checkpoints that failed (retried at the next commit past the threshold).
        public var failed = 0

        public init(background: Int = 0, writer: Int = 0, failed: Int = 0) {
            self.background = background
            self.writer = writer
            self.failed = failed
        }
    }

    init(path: String, threshold: Int32) {
        self.path = path
        self.threshold = threshold
        thread = NIOThreadPool(numberOfThreads: 1)
        thread.start()
        connection = Confined()
    }

    /// The checkpoints so far.
    public var checkpoints: Checkpoints { state.withLock { $0.checkpoints } }

    /// Makes `database` (the writer's connection) ask for checkpoints instead of running them.
    /// The store keeps this object alive as long as the connection.
    func install(on database: SQLiteDatabase) {
        guard let handle = database.handle else { return }
        sqlite3_wal_hook(
            handle,
            { context, db, _, frames in
                guard let context, let db else { return SQLITE_OK }
                Unmanaged<WALCheckpointer>.fromOpaque(context).takeUnretainedValue().committed(frames: frames, writer: db)
                return SQLITE_OK
            }, Unmanaged.passUnretained(self).toOpaque())
    }

    /// Called by the writer's commit with the log's length in pages.
    private func committed(frames: Int32, writer: OpaquePointer) {
        guard frames >= threshold else { return }
        if frames >= 4 * threshold {
            // Lagging or stopped: the writer checkpoints, as SQLite's auto-checkpoint would.
            var logged: Int32 = 0
            var copied: Int32 = 0
            let code = sqlite3_wal_checkpoint_v2(writer, nil, SQLITE_CHECKPOINT_PASSIVE, &logged, &copied)
            state.withLock { code == SQLITE_OK ? ($0.checkpoints.writer += 1) : ($0.checkpoints.failed += 1) }
            return
        }
        let schedule = state.withLock { state -> Bool in
            guard !state.scheduled, !state.stopped else { return false }
            state.scheduled = true
            return true
        }
        guard schedule else { return }
        thread.submit { [self] work in
            // A pool that stopped meanwhile hands the work back cancelled, on the caller's
            // thread: never checkpoint there (the writer checkpoints itself past four times).
            guard case .active = work else {
                state.withLock { $0.scheduled = false }
                return
            }
            checkpoint()
        }
    }

    /// One passive checkpoint on this object's connection (opened on first use).
    private func checkpoint() {
        // A lower nice value, not the idle class (SCHED_IDLE): tried, and a clean-clone test run
        // stalled for minutes — an idle-class thread starved by busy processes while holding a
        // lock others need (SQLite's, malloc's) stops them all, and a shutdown waits for its
        // checkpoint. Nice 10 still gets a tenth of a contended core.
        BackgroundPriority.lowerCurrentThread()
        ThreadName.set("tally-checkpt")
        let succeeded = connection.checkpoint(path: path)
        state.withLock { state in
            state.scheduled = false
            if succeeded { state.checkpoints.background += 1 } else { state.checkpoints.failed += 1 }
        }
    }

    /// Waits for a checkpoint in progress, then stops the thread and closes the connection.
    /// Later commits past four times the threshold checkpoint on the writer.
    func stop() {
        let first = state.withLock { state -> Bool in
            defer { state.stopped = true }
            return !state.stopped
        }
        guard first else { return }
        try? thread.syncShutdownGracefully()
        connection.close()
    }

    /// Whether ``stop()`` ran (the store closed).
    var isStopped: Bool { state.withLock { $0.stopped } }

    /// Waits until the checkpoints asked for so far have run (tests).
    func settle() async {
        _ = try? await thread.runIfActive {}
    }

    /// The checkpoint thread's connection.
    // @unchecked: used only on the checkpointer's single thread, one job at a time, and closed
    // by `stop()` after that thread has ended.
    private final class Confined: @unchecked Sendable {
        private var database: SQLiteDatabase?

        func checkpoint(path: String) -> Bool {
            if database == nil {
                guard let opened = try? SQLiteDatabase(path: path) else { return false }
                // The checkpoint syncs the log before copying it and the file after (FULL).
                guard (try? opened.execute("PRAGMA synchronous = FULL")) != nil else { return false }
                database = opened
            }
            guard let handle = database?.handle else { return false }
            var logged: Int32 = 0
            var copied: Int32 = 0
            return sqlite3_wal_checkpoint_v2(handle, nil, SQLITE_CHECKPOINT_PASSIVE, &logged, &copied) == SQLITE_OK
        }

        func close() {
            database?.close()
            database = nil
        }
    }
}
