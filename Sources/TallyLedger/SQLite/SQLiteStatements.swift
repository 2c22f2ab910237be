/// Every statement the store runs, prepared once and reused for the life of the connection.
final class Statements {
    let begin: SQLiteStatement
    let commit: SQLiteStatement
    let rollback: SQLiteStatement
    let selectBatch: SQLiteStatement
    let selectPruned: SQLiteStatement
    let insertRaw: SQLiteStatement
    let insertDuplicate: SQLiteStatement
    let insertRefused: SQLiteStatement
    /// One aggregate upsert per grain, into that grain's table.
    let upsertAggregate: [AggregateGrain: SQLiteStatement]
    let insertLog: SQLiteStatement
    let deleteLog: SQLiteStatement
    /// Counts folds, in the fold's transaction: readers that merge the log (``UnfoldedLog``)
    /// start over when it moves.
    let bumpFoldGeneration: SQLiteStatement
    let insertUnique: SQLiteStatement
    /// The fold's: the summed counts of the folded log rows added onto the table's.
    let upsertReconciliation: SQLiteStatement
    /// A batch's: the zero row of a (period, tenant, agent) the table lacks (schema version 7).
    let insertReconciliationRow: SQLiteStatement
    let insertBatch: SQLiteStatement
    let markPruned: SQLiteStatement
    let deleteBatches: SQLiteStatement
    /// A level series' rows around a batch's new events (``Levels``): the last before ?3/?4, those
    /// from ?3/?4 to ?5/?6, the first after ?5/?6.
    let selectLevelNeighbourhood: SQLiteStatement
    let insertLevel: SQLiteStatement

    init(_ db: SQLiteDatabase) throws(LedgerError) {
        begin = try db.prepare("BEGIN IMMEDIATE")
        commit = try db.prepare("COMMIT")
        rollback = try db.prepare("ROLLBACK")
        selectBatch = try db.prepare(
            "SELECT accepted, duplicate, late, adjusted, rejected, rejections, digest FROM batches WHERE agent = ?1 AND seq = ?2")
        selectPruned = try db.prepare("SELECT through_seq FROM pruned_batches WHERE agent = ?1")
        insertRaw = try db.prepare(
            """
            INSERT INTO raw_events (ts, fingerprint, tenant, metric, quantity, event_id, properties, status, billed_in,
                agent, batch_seq, batch_index, received_at)
            VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
            ON CONFLICT (ts, fingerprint) DO NOTHING
            """)
        insertDuplicate = try db.prepare(
            """
            INSERT INTO duplicate_events (agent, batch_seq, batch_index, ts, fingerprint, tenant, metric, quantity, received_at)
            VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
            """)
        insertRefused = try db.prepare(
            """
            INSERT INTO refused_events (agent, batch_seq, batch_index, reason, field, message, tenant, metric, ts,
                fingerprint, quantity, event_id, properties, source, received_at)
            VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
            """)
        // All right-hand sides of DO UPDATE see the old row, so the three `latest_*` columns
        // switch together on the same (timestamp, fingerprint) comparison.
        var upserts: [AggregateGrain: SQLiteStatement] = [:]
        for grain in AggregateGrain.allCases { upserts[grain] = try db.prepare(Self.upsert(into: SQLiteSchema.table(grain))) }
        upsertAggregate = upserts
        insertLog = try db.prepare("INSERT INTO aggregate_log (cells, reconciliation) VALUES (?1, ?2)")
        deleteLog = try db.prepare("DELETE FROM aggregate_log WHERE id <= ?1")
        bumpFoldGeneration = try db.prepare(
            """
            INSERT INTO ledger_meta (key, value) VALUES ('fold_generation', '1')
            ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1
            """)
        insertUnique = try db.prepare(
            """
            INSERT INTO unique_values (tenant, metric, property, period, value, billed_in)
            VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING
            """)
        upsertReconciliation = try db.prepare(
            """
            INSERT INTO reconciliation (period, tenant, agent, received, accepted, duplicate, late, adjusted, rejected)
            VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
            ON CONFLICT (period, tenant, agent) DO UPDATE SET
                received = received + excluded.received, accepted = accepted + excluded.accepted,
                duplicate = duplicate + excluded.duplicate, late = late + excluded.late,
                adjusted = adjusted + excluded.adjusted, rejected = rejected + excluded.rejected
            """)
        insertReconciliationRow = try db.prepare(
            """
            INSERT OR IGNORE INTO reconciliation (period, tenant, agent, received, accepted, duplicate, late, adjusted, rejected)
            VALUES (?1, ?2, ?3, 0, 0, 0, 0, 0, 0)
            """)
        insertBatch = try db.prepare(
            """
            INSERT INTO batches (agent, seq, received_at, accepted, duplicate, late, adjusted, rejected, rejections, digest)
            VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
            """)
        markPruned = try db.prepare(
            """
            INSERT INTO pruned_batches (agent, through_seq)
            SELECT agent, MAX(seq) FROM batches WHERE received_at < ?1 GROUP BY agent
            ON CONFLICT (agent) DO UPDATE SET through_seq = MAX(through_seq, excluded.through_seq)
            """)
        deleteBatches = try db.prepare("DELETE FROM batches WHERE received_at < ?1")
        selectLevelNeighbourhood = try db.prepare(
            """
            SELECT * FROM (SELECT ts, fingerprint, quantity FROM levels WHERE tenant = ?1 AND metric = ?2 AND (ts, fingerprint) < (?3, ?4)
                ORDER BY ts DESC, fingerprint DESC LIMIT 1)
            UNION ALL
            SELECT ts, fingerprint, quantity FROM levels
                WHERE tenant = ?1 AND metric = ?2 AND (ts, fingerprint) >= (?3, ?4) AND (ts, fingerprint) <= (?5, ?6)
            UNION ALL
            SELECT * FROM (SELECT ts, fingerprint, quantity FROM levels WHERE tenant = ?1 AND metric = ?2 AND (ts, fingerprint) > (?5, ?6)
                ORDER BY ts, fingerprint LIMIT 1)
            """)
        insertLevel = try db.prepare("INSERT INTO levels (tenant, metric, ts, fingerprint, quantity) VALUES (?1, ?2, ?3, ?4, ?5)")
    }

    /// All right-hand sides of DO UPDATE see the old row, so the three `latest_*` columns switch
    /// together on the same (timestamp, fingerprint) comparison. A NULL `min` (not recorded)
    /// stays NULL (`tally_min`). The level columns are zero ('0') in every cell but those of
    /// `weighted_sum` metrics, so the fold adds them only when the new value is not.
    static func upsert(into table: String) -> String {
        """
        INSERT INTO \(table) (tenant, metric, hour, dimension, value, billed_in, sum, count, max,
            latest_ts, latest_fp, latest_quantity, min, level_delta, level_time)
        VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
        ON CONFLICT (tenant, metric, hour, dimension, value, billed_in) DO UPDATE SET
            sum = tally_sum(sum, excluded.sum),
            count = count + excluded.count,
            max = tally_max(max, excluded.max),
            min = tally_min(min, excluded.min),
            level_delta = CASE WHEN excluded.level_delta = '0' THEN level_delta ELSE tally_sum(level_delta, excluded.level_delta) END,
            level_time = CASE WHEN excluded.level_time = '0' THEN level_time ELSE tally_sum(level_time, excluded.level_time) END,
            latest_ts = CASE WHEN (excluded.latest_ts, excluded.latest_fp) > (latest_ts, latest_fp)
                THEN excluded.latest_ts ELSE latest_ts END,
            latest_fp = CASE WHEN (excluded.latest_ts, excluded.latest_fp) > (latest_ts, latest_fp)
                THEN excluded.latest_fp ELSE latest_fp END,
            latest_quantity = CASE WHEN (excluded.latest_ts, excluded.latest_fp) > (latest_ts, latest_fp)
                THEN excluded.latest_quantity ELSE latest_quantity END
        """
    }
}
