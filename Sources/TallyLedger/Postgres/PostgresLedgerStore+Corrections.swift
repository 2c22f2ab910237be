import NIOCore
import PostgresNIO
public import TallyCore

/// Corrections on the shared ledger: one transaction for a whole request, the event's raw row
/// locked (`FOR UPDATE`) so that two collectors correcting the same event at once apply their
/// corrections one after the other, each seeing the other's.
extension PostgresLedgerStore {
    public func applyCorrections(_ requests: [CorrectionRequest], now: EventTime) throws(LedgerError) -> [CorrectionRecord] {
        guard !requests.isEmpty else { return [] }
        let (records, cells) = try session.transaction("applying \(requests.count) corrections") {
            () throws(LedgerError) -> ([CorrectionRecord], Int) in
            let planned = try PlannedCorrections.plan(
                requests, now: now, configuration: configuration,
                stored: { (key: String) throws(LedgerError) in try correctionRecords(key: key).first },
                event: { (key: RawKey) throws(LedgerError) in try lockedEvent(timestamp: key.timestamp, fingerprint: key.fingerprint) },
                earlier: { (key: RawKey) throws(LedgerError) in try corrections(CorrectionFilter(event: key)) },
                insert: { (record: CorrectionRecord) throws(LedgerError) in try insertCorrection(record) })
            let records = planned.records
            let cells = planned.cells
            let growth = planned.growth
            if !cells.isEmpty { try log(cells, growth: growth) }
            return (records, cells.count)
        }
        if cells > 0 {
            loggedRows += 1
            loggedCells += cells
        }
        return records
    }

    public func corrections(_ filter: CorrectionFilter) throws(LedgerError) -> [CorrectionRecord] {
        let lower = filter.eventTimes?.lowerBound.microseconds ?? Int64.min
        let upper = filter.eventTimes?.upperBound.microseconds ?? Int64.max
        let eventTime = filter.event?.timestamp.microseconds
        let eventPrint = filter.event.map { ByteBuffer(bytes: $0.fingerprint.bytes) }
        // Every invoice read asks for its tenant's corrections: inside a read's snapshot the
        // answer is kept per fold generation (a correction logs cells, so the next fold bumps it).
        let parameters = [
            filter.tenant ?? "\u{0}", "\(lower)", "\(upper)", eventTime.map { "\($0)" } ?? "", filter.event.map { "\($0.fingerprint)" } ?? "",
        ]
        return try cachedRead("corrections", parameters, rows: { $0.count }) { () throws(LedgerError) -> [CorrectionRecord] in
            try readCorrections(tenant: filter.tenant, lower: lower, upper: upper, eventTime: eventTime, eventPrint: eventPrint)
        }
    }

    private func readCorrections(
        tenant: String?, lower: Int64, upper: Int64, eventTime: Int64?, eventPrint: ByteBuffer?
    ) throws(LedgerError) -> [CorrectionRecord] {
        let rows = try session.query(
            """
            SELECT \(unescaped: Self.correctionColumns) FROM corrections
            WHERE (\(tenant)::text IS NULL OR tenant = \(tenant)) AND ts >= \(lower) AND ts < \(upper)
            AND (\(eventTime)::bigint IS NULL OR (ts = \(eventTime) AND fingerprint = \(eventPrint)))
            ORDER BY id
            """, "reading corrections")
        var records: [CorrectionRecord] = []
        for row in rows { records.append(try Self.correction(row)) }
        return records
    }

    static let correctionColumns =
        "key, tenant, metric, ts, fingerprint, action, quantity_before, properties_before, quantity_after, properties_after, billed_in, reason, actor, created_at"

    static func correction(_ row: PostgresRow) throws(LedgerError) -> CorrectionRecord {
        let r: (String, String, String, Int64, ByteBuffer, String, String, ByteBuffer, String?, ByteBuffer?, String, String, String, Int64)
        do {
            r = try row.decode(
                (String, String, String, Int64, ByteBuffer, String, String, ByteBuffer, String?, ByteBuffer?, String, String, String, Int64).self)
        } catch {
            throw .corruptRow("corrections row: \(error)")
        }
        guard let fingerprint = Fingerprint(bytes: Array(r.4.readableBytesView)) else { throw .corruptRow("corrections fingerprint") }
        return CorrectionRecord(
            key: r.0, tenant: r.1, metric: r.2, timestamp: EventTime(microseconds: r.3), fingerprint: fingerprint, action: r.5,
            quantityBefore: try quantity(r.6, "corrections quantity_before"),
            propertiesBefore: try PropertiesCodec.decode(Array(r.7.readableBytesView)),
            quantityAfter: try r.8.map { (text: String) throws(LedgerError) in try quantity(text, "corrections quantity_after") },
            propertiesAfter: try r.9.map { (blob: ByteBuffer) throws(LedgerError) in try PropertiesCodec.decode(Array(blob.readableBytesView)) },
            billedIn: r.10.isEmpty ? nil : BillingPeriod(r.10), reason: r.11, actor: r.12, createdAt: EventTime(microseconds: r.13))
    }

    func correctionRecords(key: String) throws(LedgerError) -> [CorrectionRecord] {
        var records: [CorrectionRecord] = []
        for row in try session.query("SELECT \(unescaped: Self.correctionColumns) FROM corrections WHERE key = \(key)", "reading a correction") {
            records.append(try Self.correction(row))
        }
        return records
    }

    /// The raw event of one ledger key, locked until the transaction ends; nil if not stored.
    func lockedEvent(timestamp: EventTime, fingerprint: Fingerprint) throws(LedgerError) -> LedgerRecord? {
        let rows = try session.query(
            """
            SELECT tenant, metric, quantity, event_id, properties, status, billed_in, agent, batch_seq, batch_index, received_at
            FROM raw_events WHERE ts = \(timestamp.microseconds) AND fingerprint = \(ByteBuffer(bytes: fingerprint.bytes)) FOR UPDATE
            """, "locking the corrected event")
        guard let row = rows.first else { return nil }
        let r: (String, String, String, String?, ByteBuffer, String, String?, String, Int64, Int32, Int64)
        do { r = try row.decode((String, String, String, String?, ByteBuffer, String, String?, String, Int64, Int32, Int64).self) } catch {
            throw .corruptRow("raw_events row: \(error)")
        }
        guard let status = EventStatus(rawValue: r.5) else { throw .corruptRow("raw_events status '\(r.5)'") }
        let event = UsageEvent(
            tenant: r.0, metric: r.1, quantity: try Self.quantity(r.2, "raw_events quantity"), timestamp: timestamp, id: r.3,
            properties: try PropertiesCodec.decode(Array(r.4.readableBytesView)))
        return LedgerRecord(
            event: event, fingerprint: fingerprint, status: status, billedIn: r.6.flatMap { BillingPeriod($0) }, agent: r.7,
            batchSequence: UInt64(bitPattern: r.8), batchIndex: Int(r.9), receivedAt: EventTime(microseconds: r.10))
    }

    func insertCorrection(_ record: CorrectionRecord) throws(LedgerError) {
        let after = record.propertiesAfter.map { ByteBuffer(bytes: PropertiesCodec.encode($0)) }
        try session.query(
            """
            INSERT INTO corrections (\(unescaped: Self.correctionColumns)) VALUES (\(record.key), \(record.tenant), \(record.metric),
                \(record.timestamp.microseconds), \(ByteBuffer(bytes: record.fingerprint.bytes)), \(record.action),
                \(record.quantityBefore.description), \(ByteBuffer(bytes: PropertiesCodec.encode(record.propertiesBefore))),
                \(record.quantityAfter?.description), \(after), \(record.billedIn?.description ?? ""), \(record.reason), \(record.actor),
                \(record.createdAt.microseconds))
            """, "recording a correction")
    }
}

extension PostgresLedgerStore {
    public func saveBackfill(_ record: BackfillRecord) throws(LedgerError) {
        let c = record.counts
        try session.query(
            """
            INSERT INTO backfills (id, reason, actor, source, started_at, received, accepted, duplicate, late, adjusted, rejected, finished,
                reverted_at, revert_reason)
            VALUES (\(record.id), \(record.reason), \(record.actor), \(record.source), \(record.startedAt.microseconds), \(c.received),
                \(c.accepted), \(c.duplicate), \(c.late), \(c.adjusted), \(c.rejected), \(record.finished),
                \(record.revertedAt?.microseconds), \(record.revertReason))
            ON CONFLICT (id) DO UPDATE SET reason = excluded.reason, actor = excluded.actor, source = excluded.source,
                started_at = excluded.started_at, received = excluded.received, accepted = excluded.accepted,
                duplicate = excluded.duplicate, late = excluded.late, adjusted = excluded.adjusted, rejected = excluded.rejected,
                finished = excluded.finished, reverted_at = excluded.reverted_at, revert_reason = excluded.revert_reason
            """, "recording a backfill")
    }

    public func backfills() throws(LedgerError) -> [BackfillRecord] {
        var records: [BackfillRecord] = []
        for row in try session.query(
            """
            SELECT id, reason, actor, source, started_at, received, accepted, duplicate, late, adjusted, rejected, finished, reverted_at,
                revert_reason
            FROM backfills ORDER BY started_at, id
            """, "reading backfills")
        {
            let r: (String, String, String, String, Int64, Int64, Int64, Int64, Int64, Int64, Int64, Bool, Int64?, String?)
            do {
                r = try row.decode((String, String, String, String, Int64, Int64, Int64, Int64, Int64, Int64, Int64, Bool, Int64?, String?).self)
            } catch {
                throw .corruptRow("backfills row: \(error)")
            }
            var counts = ReconciliationCounts()
            counts.received = r.5
            counts.accepted = r.6
            counts.duplicate = r.7
            counts.late = r.8
            counts.adjusted = r.9
            counts.rejected = r.10
            records.append(
                BackfillRecord(
                    id: r.0, reason: r.1, actor: r.2, source: r.3, startedAt: EventTime(microseconds: r.4), counts: counts, finished: r.11,
                    revertedAt: r.12.map { EventTime(microseconds: $0) }, revertReason: r.13))
        }
        return records
    }
}
