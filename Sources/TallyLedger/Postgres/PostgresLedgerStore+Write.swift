import Metrics
import NIOCore
import PostgresNIO
import TallyCore

/// A batch's rows, as ``LedgerRules`` decides them: each kind of row in one statement through
/// `unnest`, whatever the batch's size, inside the batch's transaction.
extension PostgresLedgerStore {
    /// Persists what ``LedgerRules`` decides, inside the open transaction.
    /// `speculation`: the commit's pure steps done ahead, for this store's configuration.
    func write(
        _ classification: BatchClassification, speculation: LedgerSpeculation?
    ) throws(LedgerError) -> (outcome: BatchOutcome, logged: LoggedRow?, keys: [RawKey]) {
        let prepared = classification.prepared
        let batch = prepared.batch
        let agent = batch.agent
        let sequence = Int64(bitPattern: batch.sequence)
        let received = batch.receivedAt.microseconds
        if !classification.refusals.isEmpty { try insertRefusals(classification) }
        let (existing, keys) = try insertCandidates(classification)
        var plan = try configuration.plan(classification, existing: existing, speculation: speculation)
        if !plan.levels.isEmpty { try writeLevels(&plan) }
        if !plan.duplicates.isEmpty {
            var indexes: [Int32] = []
            var times: [Int64] = []
            var prints: [ByteBuffer] = []
            var tenants: [String] = []
            var metrics: [String] = []
            var quantities: [String] = []
            for duplicate in plan.duplicates {
                guard let event = classification.event(duplicate.index) else { continue }
                indexes.append(Int32(duplicate.index))
                times.append(event.timestamp.microseconds)
                prints.append(ByteBuffer(bytes: duplicate.fingerprint.bytes))
                tenants.append(event.tenant)
                metrics.append(event.metric)
                quantities.append(prepared.quantities[duplicate.index])
            }
            try session.query(
                prepared: Self.insertDuplicates,
                [
                    PostgresSession.bind(indexes), PostgresSession.bind(times), PostgresSession.bind(prints), PostgresSession.bind(tenants),
                    PostgresSession.bind(metrics), PostgresSession.bind(quantities), PostgresSession.bind(agent),
                    PostgresSession.bind(sequence), PostgresSession.bind(received),
                ], "recording duplicates")
        }
        if !plan.uniqueValues.isEmpty {
            let values = plan.uniqueValues.sorted {
                ($0.tenant, $0.metric, $0.property, $0.period, $0.value) < ($1.tenant, $1.metric, $1.property, $1.period, $1.value)
            }
            try session.query(
                """
                INSERT INTO unique_values (tenant, metric, property, period, value, billed_in)
                SELECT * FROM unnest(\(values.map(\.tenant))::text[], \(values.map(\.metric))::text[], \(values.map(\.property))::text[],
                    \(values.map(\.period.description))::text[], \(values.map(\.value))::text[], \(values.map(\.billedIn.description))::text[])
                ON CONFLICT DO NOTHING
                """, "recording unique values")
        }
        // The cells and the reconciliation counts go to the aggregate log, folded later (once
        // per fold, not per batch) by whichever collector folds.
        var logged: LoggedRow?
        if !plan.cells.isEmpty || !plan.reconciliation.isEmpty {
            let counts = ReconciliationLogCodec.encode(agent: agent, plan.reconciliation)
            let id = try log(plan.cells, encoded: speculation?.encodedCells(existing: existing, cells: plan.cells), reconciliation: counts)
            logged = LoggedRow(id: id, cells: plan.cells, counts: counts)
        }
        let outcome = plan.outcome
        try session.query(
            prepared: Self.insertBatchRecord,
            [
                PostgresSession.bind(agent), PostgresSession.bind(sequence), PostgresSession.bind(received),
                PostgresSession.bind(Int32(outcome.accepted)), PostgresSession.bind(Int32(outcome.duplicate)),
                PostgresSession.bind(Int32(outcome.late)), PostgresSession.bind(Int32(outcome.adjusted)),
                PostgresSession.bind(Int32(outcome.rejected)), PostgresSession.bind(SQLiteLedgerStore.encodeRejections(outcome.rejections)),
                PostgresSession.bind(ByteBuffer(bytes: prepared.contentDigest)),
            ], "recording the batch")
        return (outcome, logged, keys)
    }

    /// A log row a commit wrote, for ``PostgresLogMemory`` once the commit is durable.
    struct LoggedRow {
        var id: Int64
        var cells: AggregateCells
        var counts: [UInt8]?
    }

    /// Inserts the candidate raw rows in key order; returns, per candidate, whether its key was
    /// stored already (its row was not new), and every candidate's key (all stored once the
    /// transaction commits, for ``PostgresRecentKeys``).
    ///
    /// Keys this process stored recently are duplicates without asking the server. The rest go in
    /// with a plain `INSERT` in a savepoint, which is much cheaper for the server than
    /// `ON CONFLICT DO NOTHING` (``PostgresRecentKeys`` has the figures); if one of them was stored
    /// after all, that insert fails whole, is rolled back to the savepoint, and the rows go in
    /// again with `ON CONFLICT`, which says which were new. After such a fallback the next batches
    /// go straight to `ON CONFLICT` for a while (1, 2, 4, … 64 batches while fallbacks repeat), so
    /// a stream of duplicates this process has not seen costs little more than before.
    func insertCandidates(_ classification: BatchClassification) throws(LedgerError) -> (existing: [Bool], keys: [RawKey]) {
        guard !classification.candidates.isEmpty else { return ([], []) }
        let prepared = classification.prepared
        let batch = prepared.batch
        let events = batch.events
        // In key order (the unique index's), sorted as keys and positions: the rows are read
        // from the batch in place below.
        var order: [(key: RawKey, position: Int)] = []
        order.reserveCapacity(classification.candidates.count)
        for (position, candidate) in classification.candidates.enumerated() {
            guard case .valid(let event) = events[candidate.index] else { continue }
            order.append((RawKey(timestamp: event.timestamp, fingerprint: candidate.fingerprint), position))
        }
        order.sort { $0.key < $1.key }
        let keys = order.map(\.key)
        var existing = [Bool](repeating: false, count: classification.candidates.count)
        let known = recentKeys.contains(keys)
        var times = PostgresArrayColumn(of: .int8, reservingBytes: order.count * 12)
        var prints = PostgresArrayColumn(of: .bytea, reservingBytes: order.count * 20)
        var tenants = PostgresArrayColumn(of: .text, reservingBytes: order.count * 16)
        var metrics = PostgresArrayColumn(of: .text, reservingBytes: order.count * 16)
        var quantities = PostgresArrayColumn(of: .text, reservingBytes: order.count * 12)
        var ids = PostgresArrayColumn(of: .text, reservingBytes: order.count * 4)
        var hasID = PostgresArrayColumn(of: .bool, reservingBytes: order.count * 5)
        var properties = PostgresArrayColumn(of: .bytea, reservingBytes: order.count * 48)
        var statuses = PostgresArrayColumn(of: .text, reservingBytes: order.count * 12)
        var billed = PostgresArrayColumn(of: .text, reservingBytes: order.count * 4)
        var indexes = PostgresArrayColumn(of: .int4, reservingBytes: order.count * 8)
        var rows = 0
        for ((key, position), isKnown) in zip(order, known) {
            if isKnown {
                existing[position] = true
                continue
            }
            let candidate = classification.candidates[position]
            guard case .valid(let event) = events[candidate.index] else { continue }
            times.append(key.timestamp.microseconds)
            prints.append(candidate.fingerprint)
            tenants.append(event.tenant)
            metrics.append(event.metric)
            quantities.append(prepared.quantities[candidate.index])
            ids.append(event.id ?? "")
            hasID.append(event.id != nil)
            properties.append(bytes: prepared.properties(candidate.index))
            statuses.append(candidate.status.rawValue)
            billed.append(candidate.billedIn?.description ?? "")
            indexes.append(Int32(candidate.index))
            rows += 1
        }
        rawInserts.known += order.count - rows
        rawInsertMetrics.known.increment(by: Int64(order.count - rows))
        guard rows > 0 else { return (existing, keys) }
        let binds = [
            times.bind(), prints.bind(), tenants.bind(), metrics.bind(), quantities.bind(), ids.bind(), hasID.bind(),
            properties.bind(), statuses.bind(), billed.bind(), indexes.bind(), try PostgresSession.bind(batch.agent),
            try PostgresSession.bind(Int64(bitPattern: batch.sequence)), try PostgresSession.bind(batch.receivedAt.microseconds),
        ]
        if rawInserts.straightToOnConflict > 0 {
            rawInserts.straightToOnConflict -= 1
            rawInsertMetrics.onConflict.increment()
        } else if try session.succeedsUnlessUniqueViolation(prepared: Self.insertNewRawEvents, binds, "inserting raw events") {
            rawInserts.plain += 1
            rawInsertMetrics.plain.increment()
            rawInserts.penalty = max(1, rawInserts.penalty / 2)
            return (existing, keys)
        } else {
            rawInserts.fallbacks += 1
            rawInsertMetrics.fallback.increment()
            rawInserts.straightToOnConflict = rawInserts.penalty
            rawInserts.penalty = min(64, rawInserts.penalty * 2)
        }
        rawInserts.onConflict += 1
        // One answer row, not one per new event: how many were new and, only when some were
        // not, which ones. A row per event cost the server and the collector more than the
        // answer is worth.
        let result = try session.query(prepared: Self.insertRawEvents, binds, "inserting raw events")
        guard let row = result.first, row.count == 2 else { throw .corruptRow("the raw-event insert answered no row") }
        let (count, some): (Int32, [Int32]?)
        do { (count, some) = (try row[0].decode(Int32.self), try row[1].decode([Int32]?.self)) } catch {
            throw .corruptRow("the raw-event insert's answer: \(error)")
        }
        guard let some else {
            guard Int(count) == rows else { throw .corruptRow("\(count) of \(rows) raw events new, but none named") }
            return (existing, keys)
        }
        guard some.count == Int(count) else { throw .corruptRow("\(count) raw events new, \(some.count) named") }
        let new = Set(some)
        for ((_, position), isKnown) in zip(order, known) where !isKnown {
            existing[position] = !new.contains(Int32(classification.candidates[position].index))
        }
        return (existing, keys)
    }

    /// The Prometheus counters of ``insertCandidates(_:)``, for an operator who wants to know
    /// whether duplicates arrive through other collectors (each fallback re-inserts a batch):
    /// `tally_ledger_raw_insert_batches_total{path}` counts each batch with rows to insert once,
    /// by how they went in — `plain`, `fallback` (a plain insert met a stored key and the batch
    /// went again with `ON CONFLICT`) or `on_conflict` (straight, after a recent fallback);
    /// `tally_ledger_known_duplicate_events_total` counts events found stored in
    /// ``PostgresRecentKeys`` without asking the server.
    struct RawInsertMetrics {
        let plain: Counter
        let fallback: Counter
        let onConflict: Counter
        let known: Counter

        init(factory: any MetricsFactory) {
            let batches = "tally_ledger_raw_insert_batches_total"
            plain = Counter(label: batches, dimensions: [("path", "plain")], factory: factory)
            fallback = Counter(label: batches, dimensions: [("path", "fallback")], factory: factory)
            onConflict = Counter(label: batches, dimensions: [("path", "on_conflict")], factory: factory)
            known = Counter(label: "tally_ledger_known_duplicate_events_total", factory: factory)
        }
    }

    /// How this store's batches inserted their raw rows (``insertCandidates(_:)``): rows whose
    /// key ``PostgresRecentKeys`` held, batches inserted plainly, plain inserts that fell back,
    /// batches through `ON CONFLICT`; and the fallback's backoff.
    struct RawInserts {
        var known = 0
        var plain = 0
        var fallbacks = 0
        var onConflict = 0
        /// Batches that go to `ON CONFLICT` without trying a plain insert first.
        var straightToOnConflict = 0
        /// What the next fallback sets `straightToOnConflict` to.
        var penalty = 1
    }

    /// A batch's duplicates: $1–$6 their arrays, $7–$9 the batch's agent, sequence and receipt time.
    static let insertDuplicates = PostgresSession.PreparedStatement(
        name: "tally_insert_duplicates",
        sql: """
            INSERT INTO duplicate_events (agent, batch_seq, batch_index, ts, fingerprint, tenant, metric, quantity, received_at)
            SELECT $7::text, $8::bigint, d.i, d.ts, d.fp, d.tenant, d.metric, d.quantity, $9::bigint
            FROM unnest($1::integer[], $2::bigint[], $3::bytea[], $4::text[], $5::text[], $6::text[])
                AS d(i, ts, fp, tenant, metric, quantity)
            """)

    /// A batch's record, its key and outcome.
    static let insertBatchRecord = PostgresSession.PreparedStatement(
        name: "tally_insert_batch_record",
        sql: """
            INSERT INTO batches (agent, seq, received_at, accepted, duplicate, late, adjusted, rejected, rejections, digest)
            VALUES ($1::text, $2::bigint, $3::bigint, $4::integer, $5::integer, $6::integer, $7::integer, $8::integer, $9::text, $10::bytea)
            """)

    /// A row of the aggregate log: its cells, their total and (for a batch) its reconciliation counts.
    static let insertLogRow = PostgresSession.PreparedStatement(
        name: "tally_insert_log_row",
        sql: "INSERT INTO aggregate_log (cells, total, reconciliation) VALUES ($1::bytea, $2::text::numeric, $3::bytea) RETURNING id")

    /// The cheap overflow bound (``log(_:growth:encoded:reconciliation:)``), as text: $1 a batch's total.
    static let readOverflowBound = PostgresSession.PreparedStatement(
        name: "tally_read_overflow_bound",
        sql: """
            SELECT ((SELECT COALESCE(SUM(total), 0) FROM aggregate_log) + (SELECT monthly_ceiling FROM ledger_bounds WHERE id = 1)
                + $1::text::numeric)::text
            """)

    /// The candidate raw rows of a batch in key order, as the unique index has them (collectors
    /// inserting the same keys at once wait for each other in one order): $1–$11 the rows'
    /// arrays, $12–$14 the batch's agent, sequence and receipt time.
    private static let rawRowsInKeyOrder = """
        INSERT INTO raw_events (ts, fingerprint, tenant, metric, quantity, event_id, properties, status, billed_in,
            agent, batch_seq, batch_index, received_at)
        SELECT r.ts, r.fp, r.tenant, r.metric, r.quantity, CASE WHEN r.has_id THEN r.id END, r.properties, r.status,
            NULLIF(r.billed, ''), $12::text, $13::bigint, r.i, $14::bigint
        FROM unnest($1::bigint[], $2::bytea[], $3::text[], $4::text[], $5::text[], $6::text[], $7::boolean[], $8::bytea[],
            $9::text[], $10::text[], $11::integer[])
            WITH ORDINALITY AS r(ts, fp, tenant, metric, quantity, id, has_id, properties, status, billed, i, position)
        ORDER BY r.position
        """

    /// ``rawRowsInKeyOrder`` with `ON CONFLICT DO NOTHING`, answering how many rows were new and,
    /// only when some were not, which (their batch indexes).
    static let insertRawEvents = PostgresSession.PreparedStatement(
        name: "tally_insert_raw_events",
        sql: """
            WITH inserted AS (
            \(rawRowsInKeyOrder)
            ON CONFLICT (ts, fingerprint) DO NOTHING
            RETURNING batch_index
            )
            SELECT count(*)::integer, CASE WHEN count(*) < cardinality($11::integer[])
                THEN COALESCE(array_agg(batch_index), ARRAY[]::integer[]) END FROM inserted
            """)

    /// ``rawRowsInKeyOrder`` as it is, for rows whose keys are believed new: a stored one fails the
    /// statement with a unique violation.
    static let insertNewRawEvents = PostgresSession.PreparedStatement(name: "tally_insert_new_raw_events", sql: rawRowsInKeyOrder)

    func insertRefusals(_ classification: BatchClassification) throws(LedgerError) {
        let batch = classification.prepared.batch
        var indexes: [Int32] = []
        var reasons: [String] = []
        var fields: [String] = []
        var messages: [String] = []
        var tenants: [String] = []
        var metrics: [String] = []
        var times: [Int64] = []
        var hasTime: [Bool] = []
        var prints: [ByteBuffer] = []
        var hasPrint: [Bool] = []
        var quantities: [String] = []
        var ids: [String] = []
        var properties: [ByteBuffer] = []
        var sources: [String] = []
        var hasEvent: [Bool] = []
        var hasField: [Bool] = []
        var hasTenant: [Bool] = []
        var hasMetric: [Bool] = []
        var hasID: [Bool] = []
        var hasSource: [Bool] = []
        for refusal in classification.refusals {
            let event = classification.event(refusal.index)
            let invalid = refusal.invalid
            indexes.append(Int32(refusal.index))
            reasons.append(invalid.rejection.reason.rawValue)
            fields.append(invalid.rejection.field ?? "")
            hasField.append(invalid.rejection.field != nil)
            messages.append(invalid.rejection.message)
            let tenant = event?.tenant ?? invalid.tenant
            tenants.append(tenant ?? "")
            hasTenant.append(tenant != nil)
            let metric = event?.metric ?? invalid.metric
            metrics.append(metric ?? "")
            hasMetric.append(metric != nil)
            let time = event?.timestamp ?? invalid.timestamp
            times.append(time?.microseconds ?? 0)
            hasTime.append(time != nil)
            prints.append(ByteBuffer(bytes: refusal.fingerprint?.bytes ?? []))
            hasPrint.append(refusal.fingerprint != nil)
            quantities.append(event?.quantity.description ?? "")
            hasEvent.append(event != nil)
            let id = event?.id ?? invalid.id
            ids.append(id ?? "")
            hasID.append(id != nil)
            properties.append(ByteBuffer(bytes: event.map { PropertiesCodec.encode($0.properties) } ?? []))
            sources.append(invalid.source ?? "")
            hasSource.append(invalid.source != nil)
        }
        try session.query(
            """
            INSERT INTO refused_events (agent, batch_seq, batch_index, reason, field, message, tenant, metric, ts, fingerprint,
                quantity, event_id, properties, source, received_at)
            SELECT \(batch.agent), \(Int64(bitPattern: batch.sequence)), r.i, r.reason, CASE WHEN r.has_field THEN r.field END,
                r.message, CASE WHEN r.has_tenant THEN r.tenant END, CASE WHEN r.has_metric THEN r.metric END,
                CASE WHEN r.has_time THEN r.ts END, CASE WHEN r.has_fp THEN r.fp END,
                CASE WHEN r.has_event THEN r.quantity END, CASE WHEN r.has_id THEN r.id END,
                CASE WHEN r.has_event THEN r.properties END, CASE WHEN r.has_source THEN r.source END, \(batch.receivedAt.microseconds)
            FROM unnest(\(indexes)::integer[], \(reasons)::text[], \(fields)::text[], \(hasField)::boolean[], \(messages)::text[],
                \(tenants)::text[], \(hasTenant)::boolean[], \(metrics)::text[], \(hasMetric)::boolean[], \(times)::bigint[],
                \(hasTime)::boolean[], \(prints)::bytea[], \(hasPrint)::boolean[], \(quantities)::text[], \(hasEvent)::boolean[],
                \(ids)::text[], \(hasID)::boolean[], \(properties)::bytea[], \(sources)::text[], \(hasSource)::boolean[])
                AS r(i, reason, field, has_field, message, tenant, has_tenant, metric, has_metric, ts, has_time, fp, has_fp,
                    quantity, has_event, id, has_id, properties, source, has_source)
            """, "recording refused events")
    }

    /// Logs a batch's cells, refusing the batch if a monthly sum would leave the 128-bit range.
    /// `growth` bounds how much any one cell can grow (default: the cells' total sum, right for
    /// a batch's events; a correction's negative cells give the quantities it adds).
    /// Appends a row to the aggregate log: `cells` (whose monthly sums are checked against the
    /// overflow bound first) and, for a batch, its reconciliation counts.
    /// `encoded`: `cells` already encoded, sectioned by tenant (``LedgerSpeculation``).
    /// Returns the row's id.
    @discardableResult
    func log(
        _ cells: AggregateCells, growth: Quantity? = nil, encoded: [UInt8]? = nil, reconciliation: [UInt8]? = nil
    ) throws(LedgerError)
        -> Int64
    {
        let total: Quantity
        if let growth { total = growth } else { total = try cells.totalSum() }
        if !cells.isEmpty {
            let bounds = try session.query(prepared: Self.readOverflowBound, [PostgresSession.bind(total.description)], "reading the overflow bound")
            let boundText: String
            do { boundText = try bounds.first?.first?.decode(String.self) ?? "0" } catch { throw .corruptRow("bound: \(error)") }
            let half = Quantity(nanos: Int128.max / 2)
            if (try? Quantity(parsing: boundText)).map({ $0 > half }) ?? true {
                try session.query(
                    "SELECT pg_advisory_xact_lock(\(PostgresSchema.lockNamespace), \(PostgresSchema.Lock.overflow.rawValue))",
                    "taking the overflow lock")
                try checkMonthlySums(cells)
            }
        }
        let inserted = try session.query(
            prepared: Self.insertLogRow,
            [
                PostgresSession.bind(ByteBuffer(bytes: encoded ?? AggregateLogCodec.encode(cells, layout: .byTenant))),
                PostgresSession.bind(total.description), PostgresSession.bind(reconciliation.map { ByteBuffer(bytes: $0) }),
            ], "logging aggregate cells")
        guard let cell = inserted.first?.first else { throw .corruptRow("the aggregate log insert answered no id") }
        do { return try cell.decode(Int64.self) } catch { throw .corruptRow("aggregate log id: \(error)") }
    }

    /// The exact check: batch + logged + stored, per monthly cell.
    func checkMonthlySums(_ cells: AggregateCells) throws(LedgerError) {
        let monthly = try cells.rolledUp(to: .month)
        var logged = AggregateCells()
        for row in try session.query("SELECT cells FROM aggregate_log", "reading the aggregate log") {
            let blob = try PostgresSchema.decode(row, ByteBuffer.self, "aggregate log cells")
            try AggregateLogCodec.decode(blob, into: &logged)
        }
        let loggedMonthly = try logged.rolledUp(to: .month)
        for (key, aggregate) in monthly.cells {
            var total = aggregate.sum
            if let already = loggedMonthly.cells[key] {
                do { total = try total.adding(already.sum) } catch {
                    throw .quantityOverflow("the \(key) aggregate: \(already.sum) + \(aggregate.sum)")
                }
            }
            let stored = try session.query(
                """
                SELECT sum::text FROM usage_monthly WHERE tenant = \(key.tenant) AND metric = \(key.metric) AND hour = \(key.hour)
                AND dimension = \(key.dimension) AND value = \(key.value) AND billed_in = \(key.billedIn?.description ?? "")
                """, "reading a monthly sum")
            if let row = stored.first {
                let text = try PostgresSchema.decode(row, String.self, "monthly sum")
                let sum = try Self.quantity(text, "usage_monthly sum")
                do { _ = try total.adding(sum) } catch { throw .quantityOverflow("the \(key) aggregate: \(sum) + \(total)") }
            }
        }
    }
}
