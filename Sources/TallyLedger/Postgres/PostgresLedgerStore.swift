public import Logging
public import Metrics
import NIOCore
import PostgresNIO
public import TallyCore

/// The ledger on a shared PostgreSQL database: one collector, or several stateless collectors
/// with the same `--store`, which then form a cluster with no other coordination.
/// See ``LedgerStore`` for the guarantees and `PostgresSchema` for the layout.
///
/// **A batch** is a handful of statements in one transaction whatever its size: the batch
/// record lookup, the refused rows, the candidate raw rows as arrays through `unnest` with
/// `ON CONFLICT DO NOTHING RETURNING` — the store's answer to which keys existed, for
/// ``LedgerRules`` — then the duplicates, the aggregate log row, unique values, reconciliation
/// and the batch record. Rows are inserted in key order, so two collectors committing
/// overlapping batches lock in the same order and never deadlock; a concurrent insert of the
/// same key waits for the other transaction and then counts as a duplicate. `(agent, seq)` is
/// the batch record's key: a batch resent to another collector after a failover gets the
/// original outcome and writes nothing (two collectors committing the same batch at the same
/// instant: one waits on the key, fails, and the retry finds the record).
///
/// The snapshot and its merging reader are in `PostgresLedgerStore+Snapshot`, the fold in
/// `PostgresLedgerStore+Fold`; here: opening, partitions, commits and pruning.
///
/// **The aggregate log** works across processes: whoever folds takes a transaction-level
/// advisory lock, deletes the log rows it claims (`DELETE … RETURNING`) and writes the merged
/// cells in the same transaction, so a logged cell is folded exactly once whichever collector
/// folds. A collector's scheduled fold claims the rows it logged itself, whose cells it holds in
/// memory (``PostgresLogMemory``), and the rows a collector that died left behind; a read's fold
/// claims every row;
/// reads see every acknowledged batch: a collector's reader merges the unfolded rows of its
/// snapshot into its aggregate answers (``PostgresUnfoldedLog``), so a usage or charges read
/// never waits for a fold or a writer; other stores, and the reads a reader cannot merge (the
/// reconciliation is folded from the log too), fold first.
///
/// **Overflow.** As on SQLite a batch that would take a monthly sum out of the 128-bit range is
/// refused. The cheap bound is the sum of the logged batches' totals plus the largest stored
/// monthly sum (`ledger_bounds`, raised by each fold). When bound plus batch passes half the
/// range, the commit takes an advisory lock and checks every monthly cell exactly. Commits that
/// skip the check each stay below half the range with everything committed, and with event
/// quantities capped (10^15 units by default) even thousands of concurrent ones cannot reach the
/// other half; the CHECK on every sum column is the last line, failing a fold rather than
/// storing a wrong number.
public final class PostgresLedgerStore: LedgerStore {
    public let configuration: LedgerConfiguration
    public let address: PostgresAddress
    let session: PostgresSession
    /// Months whose raw partition this process knows to exist.
    private var partitions: Set<BillingPeriod> = []
    /// Batches and cells this store logged since its last fold: when to fold.
    var loggedRows = 0
    var loggedCells = 0
    /// Inside a read snapshot whose aggregate log was found empty: its fold generation.
    var snapshotGeneration: Int64?
    /// Inside ``withSnapshot(_:)``.
    var inSnapshot = false
    /// Set when a deferred snapshot began at another generation than its answers so far.
    var snapshotMoved = false
    /// Answers of aggregate reads, valid for one fold generation.
    var readCache = PostgresReadCache()
    /// A merging reader's unfolded log (``mergeUnfoldedLogOnRead()``); nil: aggregate reads
    /// fold first.
    var unfolded: PostgresUnfoldedLog?
    /// Inside a snapshot whose log rows a merging reader merged (later reads of the snapshot
    /// take them as they are): the fold generation of the aggregate tables it reads. The tables
    /// change only in a fold, which bumps the generation, so their answers may come from the
    /// read cache even while the log has rows.
    var snapshotTablesGeneration: Int64?
    /// Whether the last snapshot a merging reader listed had log rows (then the next one skips
    /// the separate emptiness check).
    var lastSnapshotHadLog = false
    /// The log rows this process committed and no fold has claimed yet, merged
    /// (``PostgresLogMemory``: shared by the stores of the process on this database).
    var logMemory: PostgresLogMemory
    /// Raw-event keys this process's commits stored recently (``PostgresRecentKeys``: shared
    /// by the stores of the process on this database).
    var recentKeys: PostgresRecentKeys
    /// How this store's batches inserted their raw rows (tests, diagnostics), and the same as
    /// Prometheus counters.
    var rawInserts = RawInserts()
    let rawInsertMetrics: RawInsertMetrics
    /// What the last fold of this store claimed: rows whose cells came from ``logMemory``, and
    /// rows read back (tests, diagnostics).
    var lastFold = (fromMemory: 0, readBack: 0)
    /// Tenants the reconciliation has rows for (rows are never deleted, so this only grows).
    var seenTenants: Set<String> = []
    static let maximumLogRows = 1_000

    /// Makes the next commit write everything and then drop the connection without committing,
    /// as a collector killed at that instant would (crash tests).
    var crashBeforeNextCommit = false

    /// Connects, migrates (under an advisory lock), creates the raw partitions around now and
    /// folds any aggregate log left behind.
    /// `metrics`: where its counters go (``RawInsertMetrics``); the process's metrics system by
    /// default.
    public init(
        address: PostgresAddress, configuration: LedgerConfiguration = LedgerConfiguration(),
        logger: Logger = Logger(label: "tally.ledger.postgres"), metrics: any MetricsFactory = MetricsSystem.factory
    ) throws(LedgerError) {
        try configuration.validate()
        self.configuration = configuration
        self.address = address
        session = try PostgresSession(address: address, logger: logger)
        logMemory = PostgresLogMemory.shared(for: address, limit: configuration.aggregateBufferCells)
        recentKeys = PostgresRecentKeys.shared(for: address)
        rawInsertMetrics = RawInsertMetrics(factory: metrics)
        try PostgresSchema.migrate(session)
        let now = EventTime.now()
        let window = configuration.lateWindow
        var month = BillingPeriod(containing: now.advanced(by: .zero - window.lateArrivalLimit))
        var months: [BillingPeriod] = []
        let last = BillingPeriod(containing: now.advanced(by: window.maxFutureSkew)).next
        while month <= last {
            months.append(month)
            month = month.next
        }
        try ensurePartitions(months)
        try flushAggregates()
    }

    public func close() {
        try? flushAggregates()
        session.close()
    }

    public var readsWaitOnNetwork: Bool { true }

    public func batchSpeculator() -> BatchSpeculator? { BatchSpeculator(configuration: configuration) }

    // MARK: - Partitions

    /// Creates the monthly raw partitions of `months` that do not exist yet, in their own
    /// transaction under an advisory lock (collectors creating the same month at once wait for
    /// each other).
    func ensurePartitions(_ months: [BillingPeriod]) throws(LedgerError) {
        let missing = Set(months).subtracting(partitions)
        guard !missing.isEmpty else { return }
        try session.transaction("creating raw event partitions") { () throws(LedgerError) in
            try session.query(
                "SELECT pg_advisory_xact_lock(\(PostgresSchema.lockNamespace), \(PostgresSchema.Lock.partitions.rawValue))",
                "taking the partition lock")
            for month in missing.sorted() {
                try session.execute(
                    """
                    CREATE TABLE IF NOT EXISTS \(Self.partitionName(month)) PARTITION OF raw_events
                    FOR VALUES FROM (\(month.start.microseconds)) TO (\(month.end.microseconds))
                    """, "creating the raw partition of \(month)")
            }
        }
        partitions.formUnion(missing)
    }

    /// `raw_events_YYYY_MM`.
    public static func partitionName(_ month: BillingPeriod) -> String {
        "raw_events_" + month.description.replacingOccurrences(of: "-", with: "_")
    }

    // MARK: - Commit

    public func commit(_ prepared: PreparedBatch) throws(LedgerError) -> BatchOutcome {
        let batch = prepared.batch
        let speculation = prepared.speculation.flatMap { $0.applies(to: configuration) ? $0 : nil }
        let classification = speculation?.classification ?? LedgerRules.classify(prepared, window: configuration.lateWindow)
        var months = Set<BillingPeriod>()
        for candidate in classification.candidates {
            if let event = classification.event(candidate.index) { months.insert(BillingPeriod(containing: event.timestamp)) }
        }
        try ensurePartitions(Array(months))
        let crash = crashBeforeNextCommit
        crashBeforeNextCommit = false
        let written: (outcome: BatchOutcome, logged: LoggedRow?, keys: [RawKey])? = try session.transaction(
            "committing batch \(batch.sequence) of \(batch.agent)"
        ) { () throws(LedgerError) -> (outcome: BatchOutcome, logged: LoggedRow?, keys: [RawKey])? in
            if try storedOutcome(agent: batch.agent, sequence: batch.sequence, digest: prepared.contentDigest) != nil { return nil }
            let written = try write(classification, speculation: speculation)
            if crash {
                session.abandon()
                throw LedgerError.database(code: -1, message: "injected crash", context: "committing")
            }
            return written
        }
        guard let written else {
            // Seen before: answer from the record (outside the transaction, which only read).
            guard let stored = try storedOutcome(agent: batch.agent, sequence: batch.sequence, digest: prepared.contentDigest) else {
                throw .corruptRow("the record of batch \(batch.sequence) of \(batch.agent) vanished")
            }
            return stored
        }
        // Committed: the candidates' keys are stored, and the fold may take the log row's cells
        // from memory from now on.
        recentKeys.add(written.keys)
        if let row = written.logged {
            logMemory.add(id: row.id, cells: row.cells, counts: row.counts)
            loggedRows += 1
            loggedCells += row.cells.count
        }
        if loggedCells >= configuration.aggregateBufferCells || loggedRows >= Self.maximumLogRows {
            // The batch is committed either way; a failed fold is retried by the next commit or
            // read. Another collector (or writer) folding now folds these rows too.
            try? flushAggregates(waiting: false)
            loggedRows = 0
            loggedCells = 0
        }
        return written.outcome
    }

    /// The outcome recorded for (agent, sequence), or nil for a new batch; a recorded batch
    /// with other content is a reused sequence, and a pruned one has expired. One statement
    /// (prepared) answers both: the record, if any, and how far the agent's records were pruned.
    private func storedOutcome(agent: String, sequence: UInt64, digest: [UInt8]) throws(LedgerError) -> BatchOutcome? {
        let rows = try session.query(
            prepared: Self.readBatchRecord, [PostgresSession.bind(agent), PostgresSession.bind(Int64(bitPattern: sequence))],
            "reading the batch record")
        guard let row = rows.first, row.count == 8 else { throw .corruptRow("the batch record lookup answered no row") }
        let counts: [Int32?]
        let rejections: String?
        let stored: ByteBuffer?
        let prunedThrough: Int64?
        do {
            counts = try row[0..<5].map { try $0.decode(Int32?.self) }
            rejections = try row[5].decode(String?.self)
            stored = try row[6].decode(ByteBuffer?.self)
            prunedThrough = try row[7].decode(Int64?.self)
        } catch {
            throw .corruptRow("batch record of \(agent) \(sequence): \(error)")
        }
        if let stored {
            guard Array(stored.readableBytesView) == digest else { throw .sequenceReused(agent: agent, sequence: sequence) }
            let numbers = counts.compactMap { $0 }
            guard numbers.count == 5, let rejections else {
                throw .corruptRow("batch record of \(agent) \(sequence): a count is missing")
            }
            var outcome = BatchOutcome()
            outcome.accepted = Int(numbers[0])
            outcome.duplicate = Int(numbers[1])
            outcome.late = Int(numbers[2])
            outcome.adjusted = Int(numbers[3])
            outcome.rejected = Int(numbers[4])
            outcome.rejections = try SQLiteLedgerStore.decodeRejections(rejections)
            return outcome
        }
        if let prunedThrough, UInt64(bitPattern: prunedThrough) >= sequence { throw .batchExpired(agent: agent, sequence: sequence) }
        return nil
    }

    /// ``storedOutcome(agent:sequence:digest:)``'s statement: $1 the agent, $2 the sequence.
    static let readBatchRecord = PostgresSession.PreparedStatement(
        name: "tally_read_batch_record",
        sql: """
            SELECT b.accepted, b.duplicate, b.late, b.adjusted, b.rejected, b.rejections, b.digest, p.through_seq
            FROM (SELECT 1) AS one
            LEFT JOIN batches b ON b.agent = $1::text AND b.seq = $2::bigint
            LEFT JOIN pruned_batches p ON p.agent = $1::text
            """)

    // MARK: - Prune

    @discardableResult
    public func prune(now: EventTime) throws(LedgerError) -> PruneReport {
        let cutoff = now.advanced(by: .zero - configuration.dedupeHorizon).microseconds
        return try session.transaction("pruning batch records") { () throws(LedgerError) -> PruneReport in
            try session.query(
                """
                INSERT INTO pruned_batches AS p (agent, through_seq)
                SELECT agent, MAX(seq) FROM batches WHERE received_at < \(cutoff) GROUP BY agent
                ON CONFLICT (agent) DO UPDATE SET through_seq = GREATEST(p.through_seq, excluded.through_seq)
                """, "marking pruned batches")
            let deleted = try session.query("DELETE FROM batches WHERE received_at < \(cutoff) RETURNING 1", "deleting batch records")
            return PruneReport(batchRecordsDeleted: deleted.count)
        }
    }

    static func quantity(_ text: String, _ what: String) throws(LedgerError) -> Quantity {
        do {
            return try Quantity(parsing: text)
        } catch {
            throw .corruptRow("\(what) '\(text)': \(error)")
        }
    }
}
