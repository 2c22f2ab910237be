import NIOCore
import PostgresNIO
import TallyCore

/// The fold: every committed log row into the hourly, daily and monthly tables, under the fold
/// lock, once, whichever collector folds.
extension PostgresLedgerStore {
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
            guard let (cells, reconciliation) = try claimLog(all: waiting) else { return }
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

    /// Deletes the log rows this fold claims, under the fold lock, and returns their cells and
    /// counts merged (nil: no row claimed). The rows whose cells this process holds
    /// (``PostgresLogMemory``) come back as ids alone; the others are read back and decoded.
    /// Reading and decoding the rows was most of a collector's fold, itself a sixth of its CPU
    /// in a cluster drain.
    ///
    /// `all`: every row (a read's fold, which must see every acknowledged batch, and the folds at
    /// opening and closing). Otherwise (the scheduled fold) the rows this process holds and every
    /// row up to the highest id the process's previous such fold saw: each collector folds its
    /// own rows from memory, and the rows of a collector that died are folded by the others one
    /// fold later.
    private func claimLog(all: Bool) throws(LedgerError) -> (AggregateCells, ReconciliationSums)? {
        var held = logMemory.take()
        if !held.ids.isEmpty {
            // Under the fold lock no row leaves the log but by this fold: a held row missing was
            // folded by another process's fold, and the merged cells cannot be taken apart.
            let present = try session.query(
                "SELECT count(*)::bigint FROM aggregate_log WHERE id = ANY(\(held.ids))", "checking the held log rows")
            let count = try present.first.map { (row) throws(LedgerError) in try PostgresSchema.decode(row, Int64.self, "held log rows") }
            if count != Int64(held.ids.count) { held = PostgresLogMemory.Rows() }
        }
        let ids = held.ids
        // A read's fold claims every row; the scheduled fold its own rows and those up to the horizon.
        var horizon = Int64.max
        if !all {
            horizon = logMemory.lastHorizon
            let highest = try session.query("SELECT COALESCE(max(id), 0)::bigint FROM aggregate_log", "reading the log's last row")
            logMemory.lastHorizon =
                try highest.first.map { (row) throws(LedgerError) in try PostgresSchema.decode(row, Int64.self, "last log row") } ?? 0
        }
        let rows = try session.rows(
            """
            DELETE FROM aggregate_log WHERE id = ANY(\(ids)) OR id <= \(horizon)
            RETURNING id, CASE WHEN id = ANY(\(ids)) THEN NULL ELSE cells END,
                CASE WHEN id = ANY(\(ids)) THEN NULL ELSE reconciliation END
            """, "claiming the aggregate log"
        ) { (row) throws(LedgerError) in try Self.logRow(row) }
        guard !rows.isEmpty else { return nil }
        // Read back only: room for every cell the store logged, as growing costs rehashing.
        var cells = ids.isEmpty ? AggregateCells(minimumCapacity: min(loggedCells, 1 << 20)) : held.cells
        var reconciliation = ReconciliationSums()
        for counts in held.counts { try ReconciliationLogCodec.decode(ByteBuffer(bytes: counts), into: &reconciliation) }
        var fromMemory = 0
        for row in rows {
            guard let blob = row.cells else {
                fromMemory += 1
                continue
            }
            try AggregateLogCodec.decode(blob, into: &cells)
            if let counts = row.counts { try ReconciliationLogCodec.decode(counts, into: &reconciliation) }
        }
        // Every held row was present, and is claimed whichever way: otherwise the merged cells
        // would not be these rows' (the transaction is rolled back, and the rows read next time).
        guard fromMemory == ids.count else {
            throw .corruptRow("the fold claimed \(fromMemory) of the \(ids.count) log rows this process holds")
        }
        lastFold = (fromMemory, rows.count - fromMemory)
        return (cells, reconciliation)
    }

    /// One statement: the summed reconciliation counts of every folded batch, added onto the
    /// stored rows in key order.
    private func upsert(_ sums: ReconciliationSums) throws(LedgerError) {
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
        // Each column at its final size at once (their growth showed in the fold's profile).
        tenants.reserveCapacity(cells.count)
        metrics.reserveCapacity(cells.count)
        hours.reserveCapacity(cells.count)
        dimensions.reserveCapacity(cells.count)
        values.reserveCapacity(cells.count)
        billed.reserveCapacity(cells.count)
        sums.reserveCapacity(cells.count)
        counts.reserveCapacity(cells.count)
        maxima.reserveCapacity(cells.count)
        latestTimes.reserveCapacity(cells.count)
        latestPrints.reserveCapacity(cells.count)
        latestQuantities.reserveCapacity(cells.count)
        minima.reserveCapacity(cells.count)
        levelDeltas.reserveCapacity(cells.count)
        levelTimes.reserveCapacity(cells.count)
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
}

extension PostgresLedgerStore {
    /// An aggregate log row as the fold and the merging reader select it (`id, cells,
    /// reconciliation`), its bytes copied out of postgres-nio's receive buffer
    /// (``PostgresSession/rows(_:_:copying:)``). The counts are NULL for a correction's row; the
    /// fold selects both NULL for a row whose cells the process holds (``PostgresLogMemory``).
    static func logRow(_ row: PostgresRow) throws(LedgerError) -> (id: Int64, cells: [UInt8]?, counts: ByteBuffer?) {
        let (id, blob, counts): (Int64, ByteBuffer?, ByteBuffer?)
        do { (id, blob, counts) = try row.decode((Int64, ByteBuffer?, ByteBuffer?).self) } catch {
            throw .corruptRow("aggregate log row: \(error)")
        }
        return (id, blob.map { Array($0.readableBytesView) }, counts.map { ByteBuffer(bytes: $0.readableBytesView) })
    }
}

extension AggregateLogCodec {
    /// ``decode(_:into:)`` of a log row as PostgreSQL returns it, read in place (a row is a
    /// batch's cells: tens of kilobytes the fold would otherwise copy first).
    static func decode(_ blob: ByteBuffer, into cells: inout AggregateCells) throws(LedgerError) {
        try blob.withUnsafeReadableBytes { bytes in Result { () throws(LedgerError) in try decode(bytes, into: &cells) } }.get()
    }
}

extension ReconciliationLogCodec {
    /// ``decode(_:into:)`` of a blob as PostgreSQL returns it.
    static func decode(_ blob: ByteBuffer, into sums: inout ReconciliationSums) throws(LedgerError) {
        try blob.withUnsafeReadableBytes { bytes in Result { () throws(LedgerError) in try decode(bytes, into: &sums) } }.get()
    }
}
