public import Logging
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
/// **The aggregate log** works across processes: whoever folds takes a transaction-level
/// advisory lock, deletes every log row (`DELETE … RETURNING`) and writes the merged cells in
/// the same transaction, so a logged cell is folded exactly once whichever collector folds;
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
    private var snapshotGeneration: Int64?
    /// Inside ``withSnapshot(_:)``.
    private var inSnapshot = false
    /// Set when a deferred snapshot began at another generation than its answers so far.
    private var snapshotMoved = false
    /// Answers of aggregate reads, valid for one fold generation.
    var readCache = PostgresReadCache()
    /// A merging reader's unfolded log (``mergeUnfoldedLogOnRead()``); nil: aggregate reads
    /// fold first.
    var unfolded: PostgresUnfoldedLog?
    /// Inside a snapshot whose log rows a merging reader has merged: later reads of the same
    /// snapshot take its cells as they are.
    private var snapshotLogMerged = false
    /// Inside a snapshot whose log rows a merging reader listed: the fold generation of the
    /// aggregate tables it reads. The tables change only in a fold, which bumps the generation,
    /// so their answers may come from the read cache even while the log has rows.
    private var snapshotTablesGeneration: Int64?
    /// Whether the last snapshot a merging reader listed had log rows (then the next one skips
    /// the separate emptiness check).
    private var lastSnapshotHadLog = false
    /// Tenants the reconciliation has rows for (rows are never deleted, so this only grows).
    var seenTenants: Set<String> = []
    static let maximumLogRows = 1_000

    /// Makes the next commit write everything and then drop the connection without committing,
    /// as a collector killed at that instant would (crash tests).
    var crashBeforeNextCommit = false

    /// Connects, migrates (under an advisory lock), creates the raw partitions around now and
    /// folds any aggregate log left behind.
    public init(
        address: PostgresAddress, configuration: LedgerConfiguration = LedgerConfiguration(),
        logger: Logger = Logger(label: "tally.ledger.postgres")
    ) throws(LedgerError) {
        try configuration.validate()
        self.configuration = configuration
        self.address = address
        session = try PostgresSession(address: address, logger: logger)
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

    public func batchSpeculator() -> BatchSpeculator? { BatchSpeculator(configuration: configuration, layout: .flat) }

    public func mergeUnfoldedLogOnRead() -> Bool {
        if unfolded == nil { unfolded = PostgresUnfoldedLog() }
        return true
    }

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

    // MARK: - Snapshot and the aggregate log

    /// A read snapshot, begun only when a read needs the database: a read answered from the
    /// cache costs one round trip (the log check), not three. When the snapshot does begin, it
    /// checks that the log is still empty at the generation the cached answers came from; if a
    /// batch or a fold came in between, the body runs again in a snapshot begun at once.
    public func withSnapshot<T>(_ body: () throws(LedgerError) -> T) throws(LedgerError) -> T {
        inSnapshot = true
        snapshotMoved = false
        defer {
            snapshotGeneration = nil
            snapshotLogMerged = false
            snapshotTablesGeneration = nil
            inSnapshot = false
        }
        let isolation = "ISOLATION LEVEL REPEATABLE READ READ ONLY"
        do {
            return try session.deferredTransaction(
                "reading a snapshot", isolation: isolation,
                onBegin: { [unowned self] () throws(LedgerError) in
                    guard let assumed = snapshotGeneration else { return }
                    let (unfolded, generation) = try readLogState(autocommit: false)
                    if unfolded || generation != assumed {
                        snapshotMoved = true
                        throw .database(code: -1, message: "the ledger changed during the read", context: "reading a snapshot")
                    }
                }, body)
        } catch  where snapshotMoved {
            snapshotGeneration = nil
            snapshotLogMerged = false
            snapshotTablesGeneration = nil
            return try session.transaction("reading a snapshot", isolation: isolation, body)
        }
    }

    /// Whether the aggregate log has rows, and the fold generation, in one statement.
    private func readLogState(autocommit: Bool) throws(LedgerError) -> (unfolded: Bool, generation: Int64) {
        let rows = try session.query(
            "SELECT EXISTS (SELECT 1 FROM aggregate_log), (SELECT fold_generation FROM ledger_bounds WHERE id = 1)",
            "checking the aggregate log", autocommit: autocommit)
        guard let row = rows.first else { throw .corruptRow("no ledger_bounds row") }
        do { return try row.decode((Bool, Int64).self) } catch { throw .corruptRow("log check: \(error)") }
    }

    public func hasUnfoldedAggregates() throws(LedgerError) -> Bool {
        if snapshotGeneration != nil { return false }
        if loggedRows > 0 { return true }
        // In a snapshot not begun yet, the check runs on its own: if every answer is cached,
        // the snapshot never needs to begin.
        let (unfolded, generation) = try readLogState(autocommit: inSnapshot && !session.inTransaction)
        // Inside a snapshot the answer cannot change: the body's reads need not ask again, and
        // answers cached at this generation are still current (see ``PostgresReadCache``).
        if !unfolded && inSnapshot { snapshotGeneration = generation }
        return unfolded
    }

    /// `read()`'s answer, from the read cache when this snapshot's generation has it. A read of
    /// the aggregate tables alone (`tablesOnly`: `usage_*`, which only a fold changes) may use
    /// the cache in a snapshot whose log a merging reader listed; any other (unique values,
    /// corrections, written by commits) only in a snapshot that found the log empty.
    func cachedRead<T>(
        _ name: String, _ parameters: [String], rows: (T) -> Int, tablesOnly: Bool = false, _ read: () throws(LedgerError) -> T
    ) throws(LedgerError) -> T {
        guard let generation = snapshotGeneration ?? (tablesOnly ? snapshotTablesGeneration : nil) else { return try read() }
        let key = PostgresReadCache.Key(read: name, parameters: parameters)
        if let answer: T = readCache.answer(key, at: generation) { return answer }
        let answer = try read()
        readCache.keep(answer, rows: rows(answer), for: key, at: generation)
        return answer
    }

    /// What an aggregate read of `tenant` adds to the tables' rows: for a merging reader inside
    /// ``withSnapshot(_:)``, the snapshot's unfolded log cells of the tenant (nil when the log is
    /// empty); otherwise nil, after folding the log so the tables hold everything.
    func unfoldedForRead(tenant: String) throws(LedgerError) -> UnfoldedCells? {
        try mergedSnapshotLog()?.cells(of: tenant)
    }

    /// What a reconciliation read adds to the table's rows, as ``unfoldedForRead(tenant:)``:
    /// the snapshot's unfolded counts per (period, tenant, agent), or nil.
    func unfoldedReconciliation() throws(LedgerError) -> [ReconciliationLogCodec.Key: ReconciliationCounts]? {
        guard let counts = try mergedSnapshotLog()?.reconciliation, !counts.isEmpty else { return nil }
        return counts
    }

    /// For a merging reader inside ``withSnapshot(_:)``: the unfolded log brought up to the
    /// snapshot (read once per snapshot), nil when the snapshot's log is empty. For any other
    /// use: nil, after folding the log so the tables hold everything.
    private func mergedSnapshotLog() throws(LedgerError) -> PostgresUnfoldedLog? {
        guard inSnapshot, var log = unfolded else {
            try flushAggregates()
            return nil
        }
        if snapshotLogMerged { return log }
        // An empty log: the tables hold everything, and answers may come from the read cache.
        // Under ingest the log is seldom empty: after a snapshot that found rows, the check (a
        // round trip of its own, outside the transaction) is skipped and the listing tells.
        if snapshotGeneration != nil { return nil }
        if !lastSnapshotHadLog {
            guard try hasUnfoldedAggregates() else { return nil }
        }
        unfolded = nil
        var listed = 0
        do throws(LedgerError) {
            // Not autocommit: this begins the snapshot's transaction if no read did yet, so the
            // rows merged and the tables read are those of one snapshot.
            let listing = try session.query(
                "SELECT (SELECT fold_generation FROM ledger_bounds WHERE id = 1), ARRAY(SELECT id FROM aggregate_log)",
                "listing the aggregate log")
            guard let first = listing.first else { throw .corruptRow("no ledger_bounds row") }
            let (generation, ids): (Int64, [Int64])
            do { (generation, ids) = try first.decode((Int64, [Int64]).self) } catch { throw .corruptRow("aggregate log listing: \(error)") }
            listed = ids.count
            if ids.isEmpty {
                // Empty in this snapshot (its transaction has begun): every answer may come from
                // the cache at its generation, as after the check.
                snapshotGeneration = generation
            }
            let missing = log.rowsToMerge(generation: generation, ids: ids)
            if !missing.isEmpty {
                let rows = try session.query(
                    "SELECT id, cells, reconciliation FROM aggregate_log WHERE id = ANY(\(missing))", "reading the aggregate log")
                for row in rows {
                    let (id, blob, counts): (Int64, ByteBuffer, ByteBuffer?)
                    do { (id, blob, counts) = try row.decode((Int64, ByteBuffer, ByteBuffer?).self) } catch {
                        throw .corruptRow("aggregate log row: \(error)")
                    }
                    try log.add(row: id) { (cell: (AggregateCellKey, UsageAggregate) throws(LedgerError) -> Void) throws(LedgerError) in
                        try blob.withUnsafeReadableBytes { bytes in
                            Result { () throws(LedgerError) in try AggregateLogCodec.decode(bytes, tenant: nil, cell) }
                        }.get()
                    } counts: { (sums: inout [ReconciliationLogCodec.Key: ReconciliationCounts]) throws(LedgerError) in
                        guard let counts else { return }
                        try counts.withUnsafeReadableBytes { bytes in
                            Result { () throws(LedgerError) in try ReconciliationLogCodec.decode(bytes, into: &sums) }
                        }.get()
                    }
                }
            }
        } catch {
            // A row that would not decode (or a failed query) leaves a partial merge: start over
            // at the next read.
            unfolded = PostgresUnfoldedLog()
            throw error
        }
        unfolded = log
        snapshotLogMerged = true
        snapshotTablesGeneration = log.generation
        lastSnapshotHadLog = listed > 0
        return log
    }

    /// Folds now, waiting for a fold in progress elsewhere (then there is little left).
    public func foldAggregates() throws(LedgerError) { try flushAggregates() }

    public func foldAggregatesUnlessFolding() throws(LedgerError) { try flushAggregates(waiting: false) }

    /// Folds every committed log row into the hourly, daily and monthly tables in one
    /// transaction, under the fold lock, deleting the rows it folds. A read waits for a fold in
    /// progress elsewhere (then sees its result); a fold started by a commit (`waiting: false`)
    /// leaves the work to whoever holds the lock, so commits never queue behind a fold.
    func flushAggregates(waiting: Bool = true) throws(LedgerError) {
        guard try hasUnfoldedAggregates() else { return }
        // A merging reader never writes: a read it cannot merge goes to a writer.
        if inSnapshot && unfolded != nil { throw .readNeedsFold("a read of the overview, the stored cells or an audit") }
        try session.transaction("folding the aggregate log") { () throws(LedgerError) in
            if waiting {
                try session.query(
                    "SELECT pg_advisory_xact_lock(\(PostgresSchema.lockNamespace), \(PostgresSchema.Lock.fold.rawValue))", "taking the fold lock")
            } else {
                let taken = try session.query(
                    "SELECT pg_try_advisory_xact_lock(\(PostgresSchema.lockNamespace), \(PostgresSchema.Lock.fold.rawValue))",
                    "trying the fold lock")
                guard
                    try taken.first.map({ (row: PostgresRow) throws(LedgerError) in try PostgresSchema.decode(row, Bool.self, "fold lock") }) == true
                else { return }
            }
            let rows = try session.query("DELETE FROM aggregate_log RETURNING cells, reconciliation", "claiming the aggregate log")
            guard !rows.isEmpty else { return }
            var cells = AggregateCells(minimumCapacity: min(loggedCells, 1 << 20))
            var reconciliation: [ReconciliationLogCodec.Key: ReconciliationCounts] = [:]
            for row in rows {
                let (blob, counts): (ByteBuffer, ByteBuffer?)
                do { (blob, counts) = try row.decode((ByteBuffer, ByteBuffer?).self) } catch {
                    throw .corruptRow("aggregate log row: \(error)")
                }
                try AggregateLogCodec.decode(Array(blob.readableBytesView), into: &cells)
                if let counts {
                    try counts.withUnsafeReadableBytes { bytes in
                        Result { () throws(LedgerError) in try ReconciliationLogCodec.decode(bytes, into: &reconciliation) }
                    }.get()
                }
            }
            try upsert(reconciliation)
            var largest: Int128 = 0
            // Each grain from the one below it (days from hours, months from days): fewer cells.
            var rolled = cells
            for grain in AggregateGrain.allCases {
                rolled = try rolled.rolledUp(to: grain)
                try upsert(rolled, into: PostgresSchema.table(grain))
                if grain == .month { largest = rolled.cells.values.reduce(0) { max($0, $1.sum.nanos) } }
            }
            // Stored sums only grow (quantities are not negative), so the ceiling is an upper
            // bound of every monthly sum once it is raised by each fold's new monthly sums.
            try session.query(
                """
                UPDATE ledger_bounds SET monthly_ceiling = monthly_ceiling + \(Quantity(nanos: largest).description)::numeric,
                    fold_generation = fold_generation + 1
                WHERE id = 1
                """, "raising the overflow bound")
        }
        loggedRows = 0
        loggedCells = 0
    }

    /// One statement: the summed reconciliation counts of every folded batch, added onto the
    /// stored rows in key order.
    private func upsert(_ sums: [ReconciliationLogCodec.Key: ReconciliationCounts]) throws(LedgerError) {
        guard !sums.isEmpty else { return }
        let rows = sums.sorted { $0.key < $1.key }
        try session.query(
            """
            INSERT INTO reconciliation AS r (period, tenant, agent, received, accepted, duplicate, late, adjusted, rejected)
            SELECT * FROM unnest(\(rows.map(\.key.period))::text[], \(rows.map(\.key.tenant))::text[], \(rows.map(\.key.agent))::text[],
                \(rows.map(\.value.received))::bigint[], \(rows.map(\.value.accepted))::bigint[],
                \(rows.map(\.value.duplicate))::bigint[], \(rows.map(\.value.late))::bigint[],
                \(rows.map(\.value.adjusted))::bigint[], \(rows.map(\.value.rejected))::bigint[])
            ON CONFLICT (period, tenant, agent) DO UPDATE SET
                received = r.received + excluded.received, accepted = r.accepted + excluded.accepted,
                duplicate = r.duplicate + excluded.duplicate, late = r.late + excluded.late,
                adjusted = r.adjusted + excluded.adjusted, rejected = r.rejected + excluded.rejected
            """, "folding reconciliation counts")
    }

    /// One statement per grain: every merged cell through `unnest`, summed onto the stored one.
    private func upsert(_ cells: AggregateCells, into table: String) throws(LedgerError) {
        guard !cells.isEmpty else { return }
        var tenants: [String] = []
        var metrics: [String] = []
        var hours: [Int64] = []
        var dimensions: [String] = []
        var values: [String] = []
        var billed: [String] = []
        var sums: [String] = []
        var counts: [Int64] = []
        var maxima: [String] = []
        var latestTimes: [Int64] = []
        var latestPrints: [ByteBuffer] = []
        var latestQuantities: [String] = []
        var minima: [String] = []  // "" for a minimum not recorded
        var levelDeltas: [String] = []
        var levelTimes: [String] = []
        // In the dictionary's order: the fold is the only writer of these tables and two folds
        // never run at once (the lock), so no order of row locks can deadlock; sorting the
        // cells cost the collector more CPU than the rest of the fold.
        for (key, aggregate) in cells.cells {
            tenants.append(key.tenant)
            metrics.append(key.metric)
            hours.append(key.hour)
            dimensions.append(key.dimension)
            values.append(key.value)
            billed.append(key.billedIn?.description ?? "")
            sums.append(aggregate.sum.description)
            counts.append(aggregate.count)
            maxima.append(aggregate.max.description)
            latestTimes.append(aggregate.latest.timestamp.microseconds)
            latestPrints.append(ByteBuffer(bytes: aggregate.latest.fingerprint.bytes))
            latestQuantities.append(aggregate.latest.quantity.description)
            minima.append(aggregate.min?.description ?? "")
            levelDeltas.append(aggregate.levelDelta.description)
            levelTimes.append(aggregate.levelTime.description)
        }
        var binds = PostgresBindings(capacity: 15)
        binds.append(tenants)
        binds.append(metrics)
        binds.append(hours)
        binds.append(dimensions)
        binds.append(values)
        binds.append(billed)
        binds.append(sums)
        binds.append(counts)
        binds.append(maxima)
        binds.append(latestTimes)
        binds.append(latestPrints)
        binds.append(latestQuantities)
        binds.append(minima)
        binds.append(levelDeltas)
        binds.append(levelTimes)
        // LEAST ignores NULLs; a minimum not recorded on either side must stay NULL, hence the CASE.
        let sql = """
            INSERT INTO \(table) AS t (tenant, metric, hour, dimension, value, billed_in, sum, count, max,
                latest_ts, latest_fp, latest_quantity, min, level_delta, level_time)
            SELECT c.tenant, c.metric, c.hour, c.dimension, c.value, c.billed_in, c.sum::numeric, c.count, c.max::numeric,
                c.latest_ts, c.latest_fp, c.latest_quantity, NULLIF(c.min, '')::numeric, c.level_delta::numeric, c.level_time::numeric
            FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bigint[],
                $9::text[], $10::bigint[], $11::bytea[], $12::text[], $13::text[], $14::text[], $15::text[])
                AS c(tenant, metric, hour, dimension, value, billed_in, sum, count, max, latest_ts, latest_fp, latest_quantity, min,
                    level_delta, level_time)
            ON CONFLICT (tenant, metric, hour, dimension, value, billed_in) DO UPDATE SET
                sum = t.sum + excluded.sum,
                count = t.count + excluded.count,
                max = GREATEST(t.max, excluded.max),
                min = CASE WHEN t.min IS NULL OR excluded.min IS NULL THEN NULL ELSE LEAST(t.min, excluded.min) END,
                level_delta = t.level_delta + excluded.level_delta,
                level_time = t.level_time + excluded.level_time,
                latest_ts = CASE WHEN (excluded.latest_ts, excluded.latest_fp) > (t.latest_ts, t.latest_fp)
                    THEN excluded.latest_ts ELSE t.latest_ts END,
                latest_fp = CASE WHEN (excluded.latest_ts, excluded.latest_fp) > (t.latest_ts, t.latest_fp)
                    THEN excluded.latest_fp ELSE t.latest_fp END,
                latest_quantity = CASE WHEN (excluded.latest_ts, excluded.latest_fp) > (t.latest_ts, t.latest_fp)
                    THEN excluded.latest_quantity ELSE t.latest_quantity END
            """
        try session.query(PostgresQuery(unsafeSQL: sql, binds: binds), "folding into \(table)")
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
        let written: (outcome: BatchOutcome, cells: Int, logged: Bool)? = try session.transaction(
            "committing batch \(batch.sequence) of \(batch.agent)"
        ) { () throws(LedgerError) -> (outcome: BatchOutcome, cells: Int, logged: Bool)? in
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
        if written.logged {
            loggedRows += 1
            loggedCells += written.cells
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
    /// with other content is a reused sequence, and a pruned one has expired.
    private func storedOutcome(agent: String, sequence: UInt64, digest: [UInt8]) throws(LedgerError) -> BatchOutcome? {
        let rows = try session.query(
            """
            SELECT accepted, duplicate, late, adjusted, rejected, rejections, digest FROM batches
            WHERE agent = \(agent) AND seq = \(Int64(bitPattern: sequence))
            """, "reading the batch record")
        if let row = rows.first {
            let (accepted, duplicate, late, adjusted, rejected, rejections, stored): (Int32, Int32, Int32, Int32, Int32, String, ByteBuffer)
            do {
                (accepted, duplicate, late, adjusted, rejected, rejections, stored) = try row.decode(
                    (Int32, Int32, Int32, Int32, Int32, String, ByteBuffer).self)
            } catch {
                throw .corruptRow("batch record of \(agent) \(sequence): \(error)")
            }
            guard Array(stored.readableBytesView) == digest else { throw .sequenceReused(agent: agent, sequence: sequence) }
            var outcome = BatchOutcome()
            outcome.accepted = Int(accepted)
            outcome.duplicate = Int(duplicate)
            outcome.late = Int(late)
            outcome.adjusted = Int(adjusted)
            outcome.rejected = Int(rejected)
            outcome.rejections = try SQLiteLedgerStore.decodeRejections(rejections)
            return outcome
        }
        let pruned = try session.query("SELECT through_seq FROM pruned_batches WHERE agent = \(agent)", "reading pruned batches")
        if let row = pruned.first, UInt64(bitPattern: try PostgresSchema.decode(row, Int64.self, "pruned sequence")) >= sequence {
            throw .batchExpired(agent: agent, sequence: sequence)
        }
        return nil
    }

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
