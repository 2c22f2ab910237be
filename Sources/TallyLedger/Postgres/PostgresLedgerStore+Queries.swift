import NIOCore
import PostgresNIO
public import TallyCore

/// Reads: the same answers as `SQLiteLedgerStore+Queries`, from the same table layout. Every
/// aggregate read sees every acknowledged batch: it folds the log first, or on a merging reader
/// (``PostgresLedgerStore/mergeUnfoldedLogOnRead()``) adds the snapshot's unfolded cells.
extension PostgresLedgerStore {
    /// A condition on `billed_in`: `=`, `<` or `<=` a value.
    enum BilledCondition {
        case equal(String)
        case before(String)
        case through(String)
    }

    public func forEachCell(
        tenant: String, metric: String, dimension: String, hours: Range<Int64>, coarsest: AggregateGrain,
        billing selection: BillingSelection?, _ body: (Int64, String, UsageAggregate) throws(LedgerError) -> Void
    ) throws(LedgerError) {
        let billing: BilledCondition? =
            switch selection {
            case .ownPeriod: .equal("")
            case .adjustmentsIn(let period): .equal(period.description)
            case .billedBefore(let period): .before(period.description)
            case .billedThrough(let period): .through(period.description)
            case nil: nil
            }
        let unfolded = try unfoldedForRead(tenant: tenant)
        try storedCells(
            tenant: tenant, metric: metric, dimension: dimension, hours: hours, coarsest: coarsest, billing: billing, body)
        try unfolded?.forEachCell(metric: metric, dimension: dimension, hours: hours, billing: selection, body)
    }

    /// The tables' cells of ``forEachCell(tenant:metric:dimension:hours:coarsest:billing:_:)``.
    private func storedCells(
        tenant: String, metric: String, dimension: String, hours: Range<Int64>, coarsest: AggregateGrain,
        billing: BilledCondition?, _ body: (Int64, String, UsageAggregate) throws(LedgerError) -> Void
    ) throws(LedgerError) {
        let pieces = AggregateGrain.plan(hours, coarsest: coarsest)
        guard !pieces.isEmpty else { return }
        var binds = PostgresBindings(capacity: 4 + 2 * pieces.count)
        binds.append(tenant)
        binds.append(metric)
        binds.append(dimension)
        var condition = "TRUE"
        switch billing {
        case .equal(let value):
            condition = "billed_in = $4"
            binds.append(value)
        case .before(let value):
            condition = "billed_in < $4"
            binds.append(value)
        case .through(let value):
            condition = "billed_in <= $4"
            binds.append(value)
        case nil: binds.append("")
        }
        let sql = pieces.enumerated().map { index, piece in
            binds.append(piece.hours.lowerBound)
            binds.append(piece.hours.upperBound)
            return """
                SELECT hour, value, sum::text, count, max::text, latest_ts, latest_fp, latest_quantity, min::text, level_delta::text, level_time::text
                FROM \(PostgresSchema.table(piece.grain))
                WHERE tenant = $1 AND metric = $2 AND dimension = $3 AND hour >= $\(5 + 2 * index) AND hour < $\(6 + 2 * index)
                AND \(condition)
                """
        }.joined(separator: "\nUNION ALL\n")
        let billingKey = billing.map { "\($0)" } ?? "all"
        let parameters = [tenant, metric, dimension, "\(hours.lowerBound)", "\(hours.upperBound)", "\(coarsest)", billingKey]
        // Every piece (whole months, whole days, loose hours) in one round trip.
        let cells = try cachedRead("cells", parameters, rows: { $0.count }, tablesOnly: true) { () throws(LedgerError) -> [CachedCell] in
            let rows = try session.query(PostgresQuery(unsafeSQL: sql, binds: binds), "reading aggregates")
            return try Self.cells(rows)
        }
        for cell in cells { try body(cell.hour, cell.value, cell.aggregate) }
    }

    /// Aggregate rows (`hour, value, sum, count, max, latest_ts, latest_fp, latest_quantity, min,
    /// level_delta, level_time`) as cells.
    static func cells(_ rows: [PostgresRow]) throws(LedgerError) -> [CachedCell] {
        var cells: [CachedCell] = []
        cells.reserveCapacity(rows.count)
        for row in rows {
            let (hour, value, sum, count, maximum, latestTime, latestPrint, latestQuantity, minimum, delta, time) = try decodeCell(row)
            cells.append(
                CachedCell(
                    hour: hour, value: value,
                    aggregate: try aggregate(sum, count, maximum, latestTime, latestPrint, latestQuantity, minimum, delta, time)))
        }
        return cells
    }

    static func decodeCell(
        _ row: PostgresRow
    ) throws(LedgerError) -> (Int64, String, String, Int64, String, Int64, ByteBuffer, String, String?, String, String) {
        do {
            return try row.decode((Int64, String, String, Int64, String, Int64, ByteBuffer, String, String?, String, String).self)
        } catch {
            throw .corruptRow("aggregate row: \(error)")
        }
    }

    static func aggregate(
        _ sum: String, _ count: Int64, _ maximum: String, _ latestTime: Int64, _ latestPrint: ByteBuffer, _ latestQuantity: String,
        _ minimum: String?, _ levelDelta: String, _ levelTime: String
    ) throws(LedgerError) -> UsageAggregate {
        guard let fingerprint = Fingerprint(bytes: Array(latestPrint.readableBytesView)) else {
            throw .corruptRow("aggregate latest fingerprint")
        }
        var aggregate = UsageAggregate(
            sum: try quantity(sum, "aggregate sum"), count: count, max: try quantity(maximum, "aggregate max"),
            min: try minimum.map { (text: String) throws(LedgerError) in try quantity(text, "aggregate min") },
            latest: LatestValue(
                timestamp: EventTime(microseconds: latestTime), fingerprint: fingerprint,
                quantity: try quantity(latestQuantity, "aggregate latest")))
        aggregate.levelDelta = try quantity(levelDelta, "aggregate level change")
        aggregate.levelTime = try quantity(levelTime, "aggregate level time")
        return aggregate
    }

    public func periodTotals(tenant: String, metric: String, period: BillingPeriod) throws(LedgerError) -> PeriodTotals {
        let unfolded = try unfoldedForRead(tenant: tenant)
        var usage: UsageAggregate?
        try forEachCell(
            tenant: tenant, metric: metric, dimension: "",
            hours: period.start.hourSinceEpoch..<period.end.hourSinceEpoch, coarsest: .month, billing: .ownPeriod
        ) { (_: Int64, _: String, aggregate: UsageAggregate) throws(LedgerError) in
            if usage == nil { usage = aggregate } else { try usage?.merge(aggregate) }
        }
        let adjusted = try cachedRead("adjustments", [tenant, metric, period.description], rows: { $0.count }, tablesOnly: true) {
            () throws(LedgerError) -> [CachedCell] in
            let rows = try session.query(
                """
                SELECT hour, value, sum::text, count, max::text, latest_ts, latest_fp, latest_quantity, min::text, level_delta::text, level_time::text FROM usage_hourly
                WHERE tenant = \(tenant) AND metric = \(metric) AND billed_in = \(period.description) AND billed_in <> ''
                AND dimension = ''
                """, "reading adjustments")
            return try Self.cells(rows)
        }
        var adjustments: [BillingPeriod: UsageAggregate] = [:]
        for cell in adjusted {
            let original = BillingPeriod(containingHour: cell.hour)
            try adjustments.merge(cell.aggregate, at: original)
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
        return try cachedRead("uniqueCount", [tenant, metric, property, period.description], rows: { _ in 1 }) {
            () throws(LedgerError) -> UniqueCount in
            let own = try count(
                """
                SELECT COUNT(*) FROM unique_values WHERE tenant = \(tenant) AND metric = \(metric) AND property = \(property)
                AND period = \(period.description) AND billed_in = \(period.description)
                """)
            let late = try count(
                """
                SELECT COUNT(*) FROM unique_values WHERE tenant = \(tenant) AND metric = \(metric) AND property = \(property)
                AND billed_in = \(period.description) AND billed_in <> period
                """)
            return UniqueCount(usage: own, adjustments: late)
        }
    }

    func count(_ query: PostgresQuery) throws(LedgerError) -> Int {
        let rows = try session.query(query, "counting")
        return Int(try rows.first.map { (row: PostgresRow) throws(LedgerError) in try PostgresSchema.decode(row, Int64.self, "count") } ?? 0)
    }

    public func readReconciliation(
        _ filter: ReconciliationFilter, _ body: (String, String, String, ReconciliationCounts) -> Void
    ) throws(LedgerError) {
        // Reconciliation counts are folded from the aggregate log: merged, or folded first.
        let unfolded = try unfoldedReconciliation()
        let rows = try session.query(
            """
            SELECT period, tenant, agent, received, accepted, duplicate, late, adjusted, rejected FROM reconciliation
            WHERE (\(filter.period?.description)::text IS NULL OR period = \(filter.period?.description))
            AND (\(filter.tenant)::text IS NULL OR tenant = \(filter.tenant))
            AND (\(filter.agent)::text IS NULL OR agent = \(filter.agent))
            ORDER BY period COLLATE "C", tenant COLLATE "C", agent COLLATE "C"
            """, "reading reconciliation")
        var stored: [ReconciliationLogCodec.Row] = []
        for row in rows {
            let decoded: (String, String, String, Int64, Int64, Int64, Int64, Int64, Int64)
            do {
                decoded = try row.decode((String, String, String, Int64, Int64, Int64, Int64, Int64, Int64).self)
            } catch {
                throw .corruptRow("reconciliation row: \(error)")
            }
            var counts = ReconciliationCounts()
            counts.received = decoded.3
            counts.accepted = decoded.4
            counts.duplicate = decoded.5
            counts.late = decoded.6
            counts.adjusted = decoded.7
            counts.rejected = decoded.8
            stored.append((decoded.0, decoded.1, decoded.2, counts))
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
        try flushAggregates()
        let table = PostgresSchema.table(grain)
        let rows = try session.query(
            PostgresQuery(
                unsafeSQL: """
                    SELECT tenant, metric, hour, dimension, value, billed_in, sum::text, count, max::text, latest_ts, latest_fp,
                        latest_quantity, min::text, level_delta::text, level_time::text
                    FROM \(table) WHERE ($1::text IS NULL OR tenant = $1) AND hour >= $2 AND hour < $3
                    """,
                binds: {
                    var binds = PostgresBindings(capacity: 3)
                    binds.append(tenant)
                    binds.append(period.start.hourSinceEpoch)
                    binds.append(period.end.hourSinceEpoch)
                    return binds
                }()), "reading stored aggregates")
        var cells: [AggregateCellKey: UsageAggregate] = [:]
        for row in rows {
            let key: (String, String, Int64, String, String, String)
            let cell: (String, Int64, String, Int64, ByteBuffer, String, String?, String, String)
            do {
                let all = try row.decode(
                    (String, String, Int64, String, String, String, String, Int64, String, Int64, ByteBuffer, String, String?, String, String)
                        .self)
                key = (all.0, all.1, all.2, all.3, all.4, all.5)
                cell = (all.6, all.7, all.8, all.9, all.10, all.11, all.12, all.13, all.14)
            } catch {
                throw .corruptRow("\(table) row: \(error)")
            }
            var billedIn: BillingPeriod?
            if !key.5.isEmpty {
                guard let billed = BillingPeriod(key.5) else { throw .corruptRow("\(table) billed_in '\(key.5)'") }
                billedIn = billed
            }
            cells[AggregateCellKey(tenant: key.0, metric: key.1, hour: key.2, dimension: key.3, value: key.4, billedIn: billedIn)] =
                try Self.aggregate(cell.0, cell.1, cell.2, cell.3, cell.4, cell.5, cell.6, cell.7, cell.8)
        }
        return cells
    }

    /// Pages through the period on the (ts, fingerprint) key, 10,000 rows at a time, so an
    /// audit of a large month holds one page in memory.
    public func scanRawEvents(
        tenant: String?, period: BillingPeriod, _ body: (LedgerRecord) throws(LedgerError) -> Void
    ) throws(LedgerError) {
        var after: (Int64, ByteBuffer) = (period.start.microseconds - 1, ByteBuffer())
        let pageSize = 10_000
        while true {
            let rows = try session.query(
                """
                SELECT ts, fingerprint, metric, quantity, event_id, properties, status, billed_in, agent, batch_seq,
                    batch_index, received_at, tenant
                FROM raw_events WHERE (ts, fingerprint) > (\(after.0), \(after.1)) AND ts < \(period.end.microseconds)
                AND (\(tenant)::text IS NULL OR tenant = \(tenant))
                ORDER BY ts, fingerprint LIMIT \(pageSize)
                """, "scanning raw events")
            for row in rows {
                let r: (Int64, ByteBuffer, String, String, String?, ByteBuffer, String, String?, String, Int64, Int32, Int64, String)
                do {
                    r = try row.decode(
                        (Int64, ByteBuffer, String, String, String?, ByteBuffer, String, String?, String, Int64, Int32, Int64, String).self)
                } catch {
                    throw .corruptRow("raw_events row: \(error)")
                }
                after = (r.0, r.1)
                guard let fingerprint = Fingerprint(bytes: Array(r.1.readableBytesView)) else { throw .corruptRow("raw_events fingerprint") }
                guard let status = EventStatus(rawValue: r.6) else { throw .corruptRow("raw_events status '\(r.6)'") }
                let event = UsageEvent(
                    tenant: r.12, metric: r.2, quantity: try Self.quantity(r.3, "raw_events quantity"),
                    timestamp: EventTime(microseconds: r.0), id: r.4, properties: try PropertiesCodec.decode(Array(r.5.readableBytesView)))
                try body(
                    LedgerRecord(
                        event: event, fingerprint: fingerprint, status: status, billedIn: r.7.flatMap { BillingPeriod($0) }, agent: r.8,
                        batchSequence: UInt64(bitPattern: r.9), batchIndex: Int(r.10), receivedAt: EventTime(microseconds: r.11)))
            }
            if rows.count < pageSize { return }
        }
    }

    public func refusedEvents(agent: String, sequence: UInt64) throws(LedgerError) -> [RefusedEvent] {
        var events: [RefusedEvent] = []
        let seq = Int64(bitPattern: sequence)
        for row in try session.query(
            """
            SELECT batch_index, reason, message, tenant, metric, ts, fingerprint, quantity FROM refused_events
            WHERE agent = \(agent) AND batch_seq = \(seq)
            """, "reading refused events")
        {
            let r: (Int32, String, String, String?, String?, Int64?, ByteBuffer?, String?)
            do { r = try row.decode((Int32, String, String, String?, String?, Int64?, ByteBuffer?, String?).self) } catch {
                throw .corruptRow("refused_events row: \(error)")
            }
            guard let reason = RejectionReason(rawValue: r.1) else { throw .corruptRow("refused_events reason") }
            events.append(
                RefusedEvent(
                    batchIndex: Int(r.0), status: .rejected, reason: reason, message: r.2, tenant: r.3, metric: r.4,
                    timestamp: r.5.map { EventTime(microseconds: $0) },
                    fingerprint: r.6.flatMap { Fingerprint(bytes: Array($0.readableBytesView)) },
                    quantity: try r.7.map { (text: String) throws(LedgerError) in try Self.quantity(text, "refused quantity") }))
        }
        for row in try session.query(
            """
            SELECT batch_index, ts, fingerprint, tenant, metric, quantity FROM duplicate_events
            WHERE agent = \(agent) AND batch_seq = \(seq)
            """, "reading duplicates")
        {
            let r: (Int32, Int64, ByteBuffer, String, String, String)
            do { r = try row.decode((Int32, Int64, ByteBuffer, String, String, String).self) } catch {
                throw .corruptRow("duplicate_events row: \(error)")
            }
            events.append(
                RefusedEvent(
                    batchIndex: Int(r.0), status: .duplicate, reason: nil, message: "same fingerprint as an event already in the ledger",
                    tenant: r.3, metric: r.4, timestamp: EventTime(microseconds: r.1), fingerprint: Fingerprint(bytes: Array(r.2.readableBytesView)),
                    quantity: try Self.quantity(r.5, "duplicate quantity")))
        }
        return events.sorted { $0.batchIndex < $1.batchIndex }
    }
}

extension PostgresLedgerStore {
    public func traceRecords(_ query: TraceQuery) throws(LedgerError) -> TraceRecords {
        var records = TraceRecords()
        var id: String?
        var print: ByteBuffer?
        switch query.key {
        case .id(let value): id = value
        case .fingerprint(let fingerprint): print = ByteBuffer(bytes: fingerprint.bytes)
        }
        for row in try session.query(
            """
            SELECT ts, fingerprint, metric, quantity, event_id, properties, status, billed_in, agent, batch_seq, batch_index, received_at
            FROM raw_events WHERE ts >= \(query.times.lowerBound.microseconds) AND ts < \(query.times.upperBound.microseconds)
            AND tenant = \(query.tenant) AND (\(id)::text IS NULL OR event_id = \(id)) AND (\(print)::bytea IS NULL OR fingerprint = \(print))
            """, "tracing raw events")
        {
            let r: (Int64, ByteBuffer, String, String, String?, ByteBuffer, String, String?, String, Int64, Int32, Int64)
            do {
                r = try row.decode((Int64, ByteBuffer, String, String, String?, ByteBuffer, String, String?, String, Int64, Int32, Int64).self)
            } catch {
                throw .corruptRow("raw_events row: \(error)")
            }
            guard let fingerprint = Fingerprint(bytes: Array(r.1.readableBytesView)) else { throw .corruptRow("raw_events fingerprint") }
            guard let status = EventStatus(rawValue: r.6) else { throw .corruptRow("raw_events status '\(r.6)'") }
            let event = UsageEvent(
                tenant: query.tenant, metric: r.2, quantity: try Self.quantity(r.3, "raw_events quantity"),
                timestamp: EventTime(microseconds: r.0), id: r.4, properties: try PropertiesCodec.decode(Array(r.5.readableBytesView)))
            records.events.append(
                LedgerRecord(
                    event: event, fingerprint: fingerprint, status: status, billedIn: r.7.flatMap { BillingPeriod($0) }, agent: r.8,
                    batchSequence: UInt64(bitPattern: r.9), batchIndex: Int(r.10), receivedAt: EventTime(microseconds: r.11)))
        }
        for record in records.events {
            for row in try session.query(
                """
                SELECT agent, batch_seq, batch_index, received_at, quantity FROM duplicate_events
                WHERE ts = \(record.event.timestamp.microseconds) AND fingerprint = \(ByteBuffer(bytes: record.fingerprint.bytes))
                """, "tracing duplicates")
            {
                let r: (String, Int64, Int32, Int64, String)
                do { r = try row.decode((String, Int64, Int32, Int64, String).self) } catch {
                    throw .corruptRow("duplicate_events row: \(error)")
                }
                records.duplicates.append(
                    TraceArrival(
                        agent: r.0, batchSequence: UInt64(bitPattern: r.1), batchIndex: Int(r.2), receivedAt: EventTime(microseconds: r.3),
                        timestamp: record.event.timestamp, fingerprint: record.fingerprint, quantity: try Self.quantity(r.4, "duplicate quantity")))
            }
        }
        for row in try session.query(
            """
            SELECT agent, batch_seq, batch_index, received_at, reason, field, message, metric, ts, fingerprint, quantity, event_id, properties
            FROM refused_events WHERE tenant = \(query.tenant) AND (\(id)::text IS NULL OR event_id = \(id))
            AND (\(print)::bytea IS NULL OR fingerprint = \(print))
            """, "tracing refused events")
        {
            let r: (String, Int64, Int32, Int64, String, String?, String, String?, Int64?, ByteBuffer?, String?, String?, ByteBuffer?)
            do {
                r = try row.decode(
                    (String, Int64, Int32, Int64, String, String?, String, String?, Int64?, ByteBuffer?, String?, String?, ByteBuffer?).self)
            } catch {
                throw .corruptRow("refused_events row: \(error)")
            }
            guard let reason = RejectionReason(rawValue: r.4) else { throw .corruptRow("refused_events reason '\(r.4)'") }
            records.refusals.append(
                TraceRefusal(
                    agent: r.0, batchSequence: UInt64(bitPattern: r.1), batchIndex: Int(r.2), receivedAt: EventTime(microseconds: r.3),
                    reason: reason, field: r.5, message: r.6, metric: r.7, timestamp: r.8.map { EventTime(microseconds: $0) },
                    fingerprint: r.9.flatMap { Fingerprint(bytes: Array($0.readableBytesView)) },
                    quantity: try r.10.map { (text: String) throws(LedgerError) in try Self.quantity(text, "refused quantity") }, id: r.11,
                    properties: try r.12.map { (blob: ByteBuffer) throws(LedgerError) in try PropertiesCodec.decode(Array(blob.readableBytesView)) }))
        }
        records.sort()
        return records
    }
}
