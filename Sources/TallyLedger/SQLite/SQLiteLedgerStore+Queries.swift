public import TallyCore

/// Queries answered from the hourly aggregates (never raw scans), and the audit scans.
extension SQLiteLedgerStore {
    public func forEachCell(
        tenant: String, metric: String, dimension: String, hours: Range<Int64>, coarsest: AggregateGrain,
        billing selection: BillingSelection?, _ body: (Int64, String, UsageAggregate) throws(LedgerError) -> Void
    ) throws(LedgerError) {
        let billing: (condition: String, value: String)? =
            switch selection {
            case .ownPeriod: ("billed_in = ?6", "")
            case .adjustmentsIn(let period): ("billed_in = ?6", period.description)
            case .billedBefore(let period): ("billed_in < ?6", period.description)
            case .billedThrough(let period): ("billed_in <= ?6", period.description)
            case nil: nil
            }
        let unfolded = try unfoldedForRead(tenant: tenant)
        for piece in AggregateGrain.plan(hours, coarsest: coarsest) {
            let select = try database.prepare(
                """
                SELECT hour, value, sum, count, max, latest_ts, latest_fp, latest_quantity, min, level_delta, level_time FROM \(SQLiteSchema.table(piece.grain))
                WHERE tenant = ?1 AND metric = ?2 AND hour >= ?3 AND hour < ?4 AND dimension = ?5 AND \(billing?.condition ?? "?6 IS NULL")
                """)
            defer { select.reset() }
            select.bind(1, tenant)
            select.bind(2, metric)
            select.bind(3, piece.hours.lowerBound)
            select.bind(4, piece.hours.upperBound)
            select.bind(5, dimension)
            select.bind(6, billing?.value)
            while try select.step() { try body(select.int64(0), select.text(1), try readAggregate(select, from: 2)) }
        }
        try unfolded?.forEachCell(metric: metric, dimension: dimension, hours: hours, billing: selection, body)
    }

    public func periodTotals(tenant: String, metric: String, period: BillingPeriod) throws(LedgerError) -> PeriodTotals {
        let unfolded = try unfoldedForRead(tenant: tenant)
        var usage: UsageAggregate?
        try forEachCell(
            tenant: tenant, metric: metric, dimension: "",
            hours: period.start.hourSinceEpoch..<period.end.hourSinceEpoch, coarsest: .month,
            billing: .ownPeriod
        ) { (_: Int64, _: String, aggregate: UsageAggregate) throws(LedgerError) in
            if usage == nil { usage = aggregate } else { try usage?.merge(aggregate) }
        }
        let adjusted = try database.prepare(
            """
            SELECT hour, sum, count, max, latest_ts, latest_fp, latest_quantity, min, level_delta, level_time
            FROM usage_hourly INDEXED BY usage_hourly_adjustments
            WHERE tenant = ?1 AND metric = ?2 AND billed_in = ?3 AND billed_in <> '' AND dimension = ''
            """)
        defer { adjusted.reset() }
        adjusted.bind(1, tenant)
        adjusted.bind(2, metric)
        adjusted.bind(3, period.description)
        // INDEXED BY the partial index: the lookup stays proportional to the adjustments, not to
        // the tenant's whole history (without statistics the planner would scan the primary key).
        var adjustments: [BillingPeriod: UsageAggregate] = [:]
        while try adjusted.step() {
            let original = BillingPeriod(containingHour: adjusted.int64(0))
            let aggregate = try readAggregate(adjusted, from: 1)
            try adjustments.merge(aggregate, at: original)
        }
        try unfolded?.mergeAdjustments(of: metric, billedIn: period, into: &adjustments)
        return PeriodTotals(period: period, usage: usage, adjustments: adjustments)
    }

    public func uniqueCount(
        tenant: String, metric: String, property: String, period: BillingPeriod
    ) throws(LedgerError)
        -> UniqueCount
    {
        try configuration.requireUniqueCount(metric: metric, property: property)
        let own = try database.prepare(
            """
            SELECT COUNT(*) FROM unique_values
            WHERE tenant = ?1 AND metric = ?2 AND property = ?3 AND period = ?4 AND billed_in = ?4
            """)
        defer { own.reset() }
        own.bind(1, tenant)
        own.bind(2, metric)
        own.bind(3, property)
        own.bind(4, period.description)
        let usage = try own.step() ? Int(own.int64(0)) : 0
        let late = try database.prepare(
            """
            SELECT COUNT(*) FROM unique_values
            WHERE tenant = ?1 AND metric = ?2 AND property = ?3 AND billed_in = ?4 AND billed_in <> period
            """)
        defer { late.reset() }
        late.bind(1, tenant)
        late.bind(2, metric)
        late.bind(3, property)
        late.bind(4, period.description)
        let adjustments = try late.step() ? Int(late.int64(0)) : 0
        return UniqueCount(usage: usage, adjustments: adjustments)
    }

    /// Every stored reconciliation row matching the filter, its period as stored, with the
    /// counts still in the aggregate log (merged, or folded first).
    public func readReconciliation(
        _ filter: ReconciliationFilter, _ body: (String, String, String, ReconciliationCounts) -> Void
    ) throws(LedgerError) {
        let unfolded = try unfoldedReconciliation()
        let select = try database.prepare(
            """
            SELECT period, tenant, agent, received, accepted, duplicate, late, adjusted, rejected FROM reconciliation
            WHERE (?1 IS NULL OR period = ?1) AND (?2 IS NULL OR tenant = ?2) AND (?3 IS NULL OR agent = ?3)
            ORDER BY period, tenant, agent
            """)
        defer { select.reset() }
        select.bind(1, filter.period?.description)
        select.bind(2, filter.tenant)
        select.bind(3, filter.agent)
        var stored: [ReconciliationLogCodec.Row] = []
        while try select.step() {
            var counts = ReconciliationCounts()
            counts.received = select.int64(3)
            counts.accepted = select.int64(4)
            counts.duplicate = select.int64(5)
            counts.late = select.int64(6)
            counts.adjusted = select.int64(7)
            counts.rejected = select.int64(8)
            stored.append((select.text(0), select.text(1), select.text(2), counts))
        }
        for row in ReconciliationLogCodec.merged(filter, stored: stored, unfolded: unfolded) {
            body(row.period, row.tenant, row.agent, row.counts)
        }
    }

    public func storedAggregates(
        tenant: String?, period: BillingPeriod, grain: AggregateGrain
    ) throws(LedgerError)
        -> [AggregateCellKey: UsageAggregate]
    {
        let unfolded = try unfoldedForRead(tenant: tenant)
        var cells: [AggregateCellKey: UsageAggregate] = [:]
        let hours = period.start.hourSinceEpoch..<period.end.hourSinceEpoch
        for (key, aggregate) in try readCells(table: SQLiteSchema.table(grain), tenant: tenant, hours: hours) { cells[key] = aggregate }
        try unfolded?.forEach { key in
            hours.contains(key.hour)
        } _: { (key, aggregate) throws(LedgerError) in
            try cells.merge(aggregate, at: key.rolledUp(to: grain))
        }
        return cells
    }

    /// Every cell of one aggregate table whose bucket starts in `hours`, for one tenant or all.
    func readCells(table: String, tenant: String?, hours: Range<Int64>) throws(LedgerError) -> [(AggregateCellKey, UsageAggregate)] {
        let select = try database.prepare(
            """
            SELECT tenant, metric, hour, dimension, value, billed_in, sum, count, max, latest_ts, latest_fp, latest_quantity, min, level_delta, level_time
            FROM \(table) WHERE (?1 IS NULL OR tenant = ?1) AND hour >= ?2 AND hour < ?3
            """)
        defer { select.reset() }
        select.bind(1, tenant)
        select.bind(2, hours.lowerBound)
        select.bind(3, hours.upperBound)
        var cells: [(AggregateCellKey, UsageAggregate)] = []
        while try select.step() {
            let billedText = select.text(5)
            var billedIn: BillingPeriod?
            if !billedText.isEmpty {
                guard let billed = BillingPeriod(billedText) else { throw .corruptRow("\(table) billed_in '\(billedText)'") }
                billedIn = billed
            }
            let key = AggregateCellKey(
                tenant: select.text(0), metric: select.text(1), hour: select.int64(2), dimension: select.text(3), value: select.text(4),
                billedIn: billedIn)
            cells.append((key, try readAggregate(select, from: 6)))
        }
        return cells
    }

    public func scanRawEvents(
        tenant: String?, period: BillingPeriod, _ body: (LedgerRecord) throws(LedgerError) -> Void
    ) throws(LedgerError) {
        // A range scan of the period on the (ts, fingerprint) key, filtered by tenant: audits are
        // rare, and a (tenant, ts) index would cost every insert a second random-ish b-tree write.
        // Auditing every tenant is therefore one pass over the period, not one per tenant.
        let select = try database.prepare(
            """
            SELECT ts, fingerprint, metric, quantity, event_id, properties, status, billed_in, agent, batch_seq,
                batch_index, received_at, tenant
            FROM raw_events WHERE ts >= ?1 AND ts < ?2 AND (?3 IS NULL OR tenant = ?3) ORDER BY ts, fingerprint
            """)
        defer { select.reset() }
        select.bind(1, period.start.microseconds)
        select.bind(2, period.end.microseconds)
        select.bind(3, tenant)
        while try select.step() {
            guard let fingerprint = Fingerprint(bytes: select.blob(1)) else { throw .corruptRow("raw_events fingerprint") }
            let quantity = try Self.quantity(select.text(3), "raw_events quantity")
            guard let status = EventStatus(rawValue: select.text(6)) else { throw .corruptRow("raw_events status '\(select.text(6))'") }
            let billedIn = select.optionalText(7).flatMap { BillingPeriod($0) }
            let event = UsageEvent(
                tenant: tenant ?? select.text(12), metric: select.text(2), quantity: quantity,
                timestamp: EventTime(microseconds: select.int64(0)), id: select.optionalText(4),
                properties: try PropertiesCodec.decode(select.blob(5)))
            try body(
                LedgerRecord(
                    event: event, fingerprint: fingerprint, status: status, billedIn: billedIn, agent: select.text(8),
                    batchSequence: UInt64(bitPattern: select.int64(9)), batchIndex: Int(select.int64(10)),
                    receivedAt: EventTime(microseconds: select.int64(11))))
        }
    }

    public func refusedEvents(agent: String, sequence: UInt64) throws(LedgerError) -> [RefusedEvent] {
        var events: [RefusedEvent] = []
        let refused = try database.prepare(
            """
            SELECT batch_index, reason, message, tenant, metric, ts, fingerprint, quantity FROM refused_events
            WHERE agent = ?1 AND batch_seq = ?2
            """)
        defer { refused.reset() }
        refused.bind(1, agent)
        refused.bind(2, Int64(bitPattern: sequence))
        while try refused.step() {
            guard let reason = RejectionReason(rawValue: refused.text(1)) else { throw .corruptRow("refused_events reason") }
            events.append(
                RefusedEvent(
                    batchIndex: Int(refused.int64(0)), status: .rejected, reason: reason, message: refused.text(2),
                    tenant: refused.optionalText(3), metric: refused.optionalText(4),
                    timestamp: refused.isNull(5) ? nil : EventTime(microseconds: refused.int64(5)),
                    fingerprint: Fingerprint(bytes: refused.blob(6)),
                    quantity: try refused.optionalText(7).map { (text: String) throws(LedgerError) in try Self.quantity(text, "refused quantity") }))
        }
        let duplicates = try database.prepare(
            """
            SELECT batch_index, ts, fingerprint, tenant, metric, quantity FROM duplicate_events
            WHERE agent = ?1 AND batch_seq = ?2
            """)
        defer { duplicates.reset() }
        duplicates.bind(1, agent)
        duplicates.bind(2, Int64(bitPattern: sequence))
        while try duplicates.step() {
            events.append(
                RefusedEvent(
                    batchIndex: Int(duplicates.int64(0)), status: .duplicate, reason: nil,
                    message: "same fingerprint as an event already in the ledger", tenant: duplicates.text(3),
                    metric: duplicates.text(4), timestamp: EventTime(microseconds: duplicates.int64(1)),
                    fingerprint: Fingerprint(bytes: duplicates.blob(2)),
                    quantity: try Self.quantity(duplicates.text(5), "duplicate quantity")))
        }
        return events.sorted { $0.batchIndex < $1.batchIndex }
    }

    static func quantity(_ text: String, _ what: String) throws(LedgerError) -> Quantity {
        do {
            return try Quantity(parsing: text)
        } catch {
            throw .corruptRow("\(what) '\(text)': \(error)")
        }
    }

    /// Reads sum, count, max, latest_ts, latest_fp, latest_quantity, min, level_delta, level_time
    /// starting at `column`.
    func readAggregate(_ row: SQLiteStatement, from column: Int32) throws(LedgerError) -> UsageAggregate {
        guard let fingerprint = Fingerprint(bytes: row.blob(column + 4)) else { throw .corruptRow("aggregate latest fingerprint") }
        var aggregate = UsageAggregate(
            sum: try Self.quantity(row.text(column), "aggregate sum"), count: row.int64(column + 1),
            max: try Self.quantity(row.text(column + 2), "aggregate max"),
            min: row.isNull(column + 6) ? nil : try Self.quantity(row.text(column + 6), "aggregate min"),
            latest: LatestValue(
                timestamp: EventTime(microseconds: row.int64(column + 3)), fingerprint: fingerprint,
                quantity: try Self.quantity(row.text(column + 5), "aggregate latest")))
        aggregate.levelDelta = try Self.quantity(row.text(column + 7), "aggregate level change")
        aggregate.levelTime = try Self.quantity(row.text(column + 8), "aggregate level time")
        return aggregate
    }
}

extension SQLiteLedgerStore {
    public func traceRecords(_ query: TraceQuery) throws(LedgerError) -> TraceRecords {
        var records = TraceRecords()
        let raw = try database.prepare(
            """
            SELECT ts, fingerprint, metric, quantity, event_id, properties, status, billed_in, agent, batch_seq,
                batch_index, received_at
            FROM raw_events WHERE ts >= ?1 AND ts < ?2 AND tenant = ?3 AND (?4 IS NULL OR event_id = ?4)
                AND (?5 IS NULL OR fingerprint = ?5)
            """)
        defer { raw.reset() }
        raw.bind(1, query.times.lowerBound.microseconds)
        raw.bind(2, query.times.upperBound.microseconds)
        raw.bind(3, query.tenant)
        switch query.key {
        case .id(let id):
            raw.bind(4, id)
            raw.bindNull(5)
        case .fingerprint(let fingerprint):
            raw.bindNull(4)
            raw.bind(5, fingerprint: fingerprint)
        }
        while try raw.step() {
            guard let fingerprint = Fingerprint(bytes: raw.blob(1)) else { throw .corruptRow("raw_events fingerprint") }
            guard let status = EventStatus(rawValue: raw.text(6)) else { throw .corruptRow("raw_events status '\(raw.text(6))'") }
            let event = UsageEvent(
                tenant: query.tenant, metric: raw.text(2), quantity: try Self.quantity(raw.text(3), "raw_events quantity"),
                timestamp: EventTime(microseconds: raw.int64(0)), id: raw.optionalText(4), properties: try PropertiesCodec.decode(raw.blob(5)))
            records.events.append(
                LedgerRecord(
                    event: event, fingerprint: fingerprint, status: status, billedIn: raw.optionalText(7).flatMap { BillingPeriod($0) },
                    agent: raw.text(8), batchSequence: UInt64(bitPattern: raw.int64(9)), batchIndex: Int(raw.int64(10)),
                    receivedAt: EventTime(microseconds: raw.int64(11))))
        }
        // Later copies, through the (ts, fingerprint) index of duplicate_events.
        let duplicates = try database.prepare(
            """
            SELECT agent, batch_seq, batch_index, received_at, quantity FROM duplicate_events
            WHERE ts = ?1 AND fingerprint = ?2
            """)
        defer { duplicates.reset() }
        for record in records.events {
            duplicates.reset()
            duplicates.bind(1, record.event.timestamp.microseconds)
            duplicates.bind(2, fingerprint: record.fingerprint)
            while try duplicates.step() {
                records.duplicates.append(
                    TraceArrival(
                        agent: duplicates.text(0), batchSequence: UInt64(bitPattern: duplicates.int64(1)), batchIndex: Int(duplicates.int64(2)),
                        receivedAt: EventTime(microseconds: duplicates.int64(3)), timestamp: record.event.timestamp,
                        fingerprint: record.fingerprint, quantity: try Self.quantity(duplicates.text(4), "duplicate quantity")))
            }
        }
        // Refused events are few (invalid, too old, from the future): a scan of the tenant's.
        let refused = try database.prepare(
            """
            SELECT agent, batch_seq, batch_index, received_at, reason, field, message, metric, ts, fingerprint, quantity, event_id,
                properties
            FROM refused_events WHERE tenant = ?1 AND (?2 IS NULL OR event_id = ?2) AND (?3 IS NULL OR fingerprint = ?3)
            """)
        defer { refused.reset() }
        refused.bind(1, query.tenant)
        switch query.key {
        case .id(let id):
            refused.bind(2, id)
            refused.bindNull(3)
        case .fingerprint(let fingerprint):
            refused.bindNull(2)
            refused.bind(3, fingerprint: fingerprint)
        }
        while try refused.step() {
            guard let reason = RejectionReason(rawValue: refused.text(4)) else { throw .corruptRow("refused_events reason '\(refused.text(4))'") }
            records.refusals.append(
                TraceRefusal(
                    agent: refused.text(0), batchSequence: UInt64(bitPattern: refused.int64(1)), batchIndex: Int(refused.int64(2)),
                    receivedAt: EventTime(microseconds: refused.int64(3)), reason: reason, field: refused.optionalText(5),
                    message: refused.text(6), metric: refused.optionalText(7),
                    timestamp: refused.isNull(8) ? nil : EventTime(microseconds: refused.int64(8)),
                    fingerprint: refused.isNull(9) ? nil : Fingerprint(bytes: refused.blob(9)),
                    quantity: try refused.optionalText(10).map { (text: String) throws(LedgerError) in try Self.quantity(text, "refused quantity") },
                    id: refused.optionalText(11),
                    properties: refused.isNull(12) ? nil : try PropertiesCodec.decode(refused.blob(12))))
        }
        records.sort()
        return records
    }
}
