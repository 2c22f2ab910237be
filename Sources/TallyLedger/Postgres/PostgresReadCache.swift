import TallyCore

/// Answers of aggregate reads, kept for as long as the aggregates cannot have changed.
///
/// On PostgreSQL a read costs round trips, and the charges call makes several (one per metric
/// of the plan, the adjusted periods, the unique counts). Between two folds those answers do not
/// change, so a reader keeps them and asks the database one question instead: is the aggregate
/// log empty, and what is the fold generation (`ledger_bounds.fold_generation`)?
///
/// Why that is exact, not a timer: every batch commits its aggregate cells into
/// `aggregate_log` (and its unique values) in its own transaction, and every fold deletes log
/// rows and bumps the generation in one transaction. So if two snapshots both see an empty log
/// and the same generation, no batch committed between them: the aggregates and unique values
/// they see are the same, and an answer read in the first is the answer in the second. A read
/// therefore still reflects every batch acknowledged before it began. Anything else that
/// changes `usage_*` or `unique_values` must bump the generation in the same transaction.
///
/// Answers are cached only inside a read snapshot that found the log empty (see
/// ``PostgresLedgerStore/withSnapshot(_:)``), with one exception: a merging reader
/// (``PostgresLedgerStore/mergeUnfoldedLogOnRead()``) that listed its snapshot's log rows knows
/// the snapshot's generation, and the aggregate tables (`usage_*`) change only in a fold, which
/// bumps it; so their answers are cached at that generation too, and the log rows are merged
/// on top. Unique values and corrections are written by commits, so they are not.
///
/// Bounded: at most ``maximumEntries`` answers, each of at most ``maximumRowsPerAnswer`` rows; a
/// new generation drops them all.
struct PostgresReadCache {
    static let maximumEntries = 4_096
    static let maximumRowsPerAnswer = 10_000

    private var generation: Int64?
    private var answers: [Key: Any] = [:]
    /// Reads answered from the cache (tests and diagnostics).
    private(set) var hits = 0

    /// What a cached answer is the answer to: the read and its parameters.
    struct Key: Hashable {
        var read: String
        var parameters: [String]
    }

    /// The answer for `key` if it was read at `generation`.
    mutating func answer<T>(_ key: Key, at generation: Int64) -> T? {
        guard self.generation == generation, let answer = answers[key] as? T else { return nil }
        hits += 1
        return answer
    }

    /// Keeps `answer` (of `rows` rows) for `key`, read at `generation`.
    mutating func keep(_ answer: Any, rows: Int, for key: Key, at generation: Int64) {
        if self.generation != generation {
            answers.removeAll(keepingCapacity: true)
            self.generation = generation
        }
        guard rows <= Self.maximumRowsPerAnswer else { return }
        if answers.count >= Self.maximumEntries { answers.removeAll(keepingCapacity: true) }
        answers[key] = answer
    }
}

/// One aggregate row as `forEachCell` hands it on.
struct CachedCell {
    var hour: Int64
    var value: String
    var aggregate: UsageAggregate
}
