import Synchronization

/// The raw-event keys (event time, fingerprint) this process's commits stored most recently, so
/// that a batch's raw rows can go in with a plain `INSERT` instead of `INSERT … ON CONFLICT DO
/// NOTHING` (``PostgresLedgerStore/insertCandidates(_:)``).
///
/// Why: on PostgreSQL 15 `ON CONFLICT` costs each row an index scan to look for the key, a
/// speculative heap insert, the index insert and a second WAL record to confirm it; a plain
/// insert finds a conflict in its one index insert. The server's CPU for the raw-row statement
/// fell from about 7 to 4 µs per row (pgbench, 1,000-row `unnest` inserts from 4 clients, the
/// ledger's partitioned table). A plain insert cannot say which keys existed, though: it fails
/// whole on the first one. Retries (about 1% of the events in the reference workload) repeat an
/// event seconds after the original, so nearly every batch holds one whose original came in an
/// earlier batch — through the same agent, so to this collector. Those are found here, and
/// only the rest is inserted plainly; a duplicate not found here (an event retried through
/// another agent, a collector restarted) fails that insert, which is rolled back to its
/// savepoint and done again with `ON CONFLICT`.
///
/// Only ever a hint that a key exists, and a key is here only when it does: keys are added once
/// their transaction committed (the candidates the raw insert stored and the ones it found
/// stored), and raw rows are never deleted (an archived month lies beyond the late window, so no
/// event of it becomes a candidate again). A key evicted or never seen costs a fallback, never a
/// wrong answer.
///
/// Shared by the stores of one process on one database (a collector's writers), since an
/// agent's batches may go to any of them.
final class PostgresRecentKeys: Sendable {
    /// Keys held at most, the oldest evicted first: 131,072, about 9 MiB (a key and its set
    /// slot). At 100,000 events per second a retry up to a second or so later is found here;
    /// later ones fall back.
    let capacity: Int
    private struct Ring {
        var keys: [RawKey] = []
        var next = 0
        var held = Set<RawKey>()
    }
    private let ring = Mutex(Ring())

    init(capacity: Int = 131_072) {
        precondition(capacity > 0, "a positive capacity")
        self.capacity = capacity
    }

    /// For each of `keys`, whether it is held.
    func contains(_ keys: [RawKey]) -> [Bool] {
        ring.withLock { ring in keys.map { ring.held.contains($0) } }
    }

    /// Adds keys that committed transactions stored. Called after the commit, never before (a
    /// rolled-back row's key must not be here).
    func add(_ keys: [RawKey]) {
        ring.withLock { ring in
            for key in keys where ring.held.insert(key).inserted {
                if ring.keys.count < capacity {
                    ring.keys.append(key)
                } else {
                    ring.held.remove(ring.keys[ring.next])
                    ring.keys[ring.next] = key
                    ring.next = (ring.next + 1) % capacity
                }
            }
        }
    }

    /// Keys held now (tests).
    var count: Int { ring.withLock { $0.held.count } }

    private static let shared = PerDatabase<PostgresRecentKeys>()

    /// The keys of the stores of this process on `address`'s database.
    static func shared(for address: PostgresAddress) -> PostgresRecentKeys {
        shared.object(for: address) { PostgresRecentKeys() }
    }
}
