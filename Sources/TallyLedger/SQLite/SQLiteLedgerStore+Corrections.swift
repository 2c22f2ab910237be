import CSQLite
public import TallyCore

/// Corrections on the embedded ledger: one transaction for a whole request (all or none), the
/// cells through the aggregate log as a batch's are.
extension SQLiteLedgerStore {
    public func applyCorrections(_ requests: [CorrectionRequest], now: EventTime) throws(LedgerError) -> [CorrectionRecord] {
        guard !requests.isEmpty else { return [] }
        pendingLogged = nil
        try statements.begin.run()
        var records: [CorrectionRecord] = []
        var logged: (bound: Int128, cells: Int)?
        do throws(LedgerError) {
            let planned = try PlannedCorrections.plan(
                requests, now: now, configuration: configuration,
                stored: { (key: String) throws(LedgerError) in try correctionRecords(key: key).first },
                event: { (key: RawKey) throws(LedgerError) in try storedEvent(timestamp: key.timestamp, fingerprint: key.fingerprint) },
                earlier: { (key: RawKey) throws(LedgerError) in try corrections(CorrectionFilter(event: key)) },
                insert: { (record: CorrectionRecord) throws(LedgerError) in try insertCorrection(record) })
            records = planned.records
            let cells = planned.cells
            let growth = planned.growth
            if !cells.isEmpty { logged = (try log(cells, growth: growth), cells.count) }
            try commitTransaction()
        } catch {
            if database.handle != nil { try? statements.rollback.run() }
            throw error
        }
        if let logged {
            loggedBound = logged.bound
            loggedRows += 1
            loggedCells += logged.cells
        }
        mirrorCommittedLog()
        return records
    }

    public func corrections(_ filter: CorrectionFilter) throws(LedgerError) -> [CorrectionRecord] {
        let select = try database.prepare(
            """
            SELECT \(Self.correctionColumns) FROM corrections
            WHERE (?1 IS NULL OR tenant = ?1) AND ts >= ?2 AND ts < ?3 AND (?4 IS NULL OR (ts = ?4 AND fingerprint = ?5))
            ORDER BY id
            """)
        defer { select.reset() }
        select.bind(1, filter.tenant)
        select.bind(2, filter.eventTimes?.lowerBound.microseconds ?? Int64.min)
        select.bind(3, filter.eventTimes?.upperBound.microseconds ?? Int64.max)
        if let event = filter.event {
            select.bind(4, event.timestamp.microseconds)
            select.bind(5, fingerprint: event.fingerprint)
        } else {
            select.bindNull(4)
            select.bindNull(5)
        }
        var records: [CorrectionRecord] = []
        while try select.step() { records.append(try Self.correction(select)) }
        return records
    }

    static let correctionColumns =
        "key, tenant, metric, ts, fingerprint, action, quantity_before, properties_before, quantity_after, properties_after, billed_in, reason, actor, created_at"

    static func correction(_ row: SQLiteStatement) throws(LedgerError) -> CorrectionRecord {
        guard let fingerprint = Fingerprint(bytes: row.blob(4)) else { throw .corruptRow("corrections fingerprint") }
        let billed = row.text(10)
        return CorrectionRecord(
            key: row.text(0), tenant: row.text(1), metric: row.text(2), timestamp: EventTime(microseconds: row.int64(3)),
            fingerprint: fingerprint, action: row.text(5), quantityBefore: try quantity(row.text(6), "corrections quantity_before"),
            propertiesBefore: try PropertiesCodec.decode(row.blob(7)),
            quantityAfter: try row.optionalText(8).map { (text: String) throws(LedgerError) in try quantity(text, "corrections quantity_after") },
            propertiesAfter: row.isNull(9) ? nil : try PropertiesCodec.decode(row.blob(9)),
            billedIn: billed.isEmpty ? nil : BillingPeriod(billed), reason: row.text(11), actor: row.text(12),
            createdAt: EventTime(microseconds: row.int64(13)))
    }

    func correctionRecords(key: String) throws(LedgerError) -> [CorrectionRecord] {
        let select = try database.prepare("SELECT \(Self.correctionColumns) FROM corrections WHERE key = ?1")
        defer { select.reset() }
        select.bind(1, key)
        var records: [CorrectionRecord] = []
        while try select.step() { records.append(try Self.correction(select)) }
        return records
    }

    /// The raw event of one ledger key, if stored.
    func storedEvent(timestamp: EventTime, fingerprint: Fingerprint) throws(LedgerError) -> LedgerRecord? {
        let select = try database.prepare(
            """
            SELECT tenant, metric, quantity, event_id, properties, status, billed_in, agent, batch_seq, batch_index, received_at
            FROM raw_events WHERE ts = ?1 AND fingerprint = ?2
            """)
        defer { select.reset() }
        select.bind(1, timestamp.microseconds)
        select.bind(2, fingerprint: fingerprint)
        guard try select.step() else { return nil }
        guard let status = EventStatus(rawValue: select.text(5)) else { throw .corruptRow("raw_events status '\(select.text(5))'") }
        let event = UsageEvent(
            tenant: select.text(0), metric: select.text(1), quantity: try Self.quantity(select.text(2), "raw_events quantity"),
            timestamp: timestamp, id: select.optionalText(3), properties: try PropertiesCodec.decode(select.blob(4)))
        return LedgerRecord(
            event: event, fingerprint: fingerprint, status: status, billedIn: select.optionalText(6).flatMap { BillingPeriod($0) },
            agent: select.text(7), batchSequence: UInt64(bitPattern: select.int64(8)), batchIndex: Int(select.int64(9)),
            receivedAt: EventTime(microseconds: select.int64(10)))
    }

    func insertCorrection(_ record: CorrectionRecord) throws(LedgerError) {
        let insert = try database.prepare(
            "INSERT INTO corrections (\(Self.correctionColumns)) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)")
        defer { insert.reset() }
        insert.bind(1, record.key)
        insert.bind(2, record.tenant)
        insert.bind(3, record.metric)
        insert.bind(4, record.timestamp.microseconds)
        insert.bind(5, fingerprint: record.fingerprint)
        insert.bind(6, record.action)
        insert.bind(7, record.quantityBefore.description)
        insert.bind(8, blob: PropertiesCodec.encode(record.propertiesBefore))
        insert.bind(9, record.quantityAfter?.description)
        if let after = record.propertiesAfter { insert.bind(10, blob: PropertiesCodec.encode(after)) } else { insert.bindNull(10) }
        insert.bind(11, record.billedIn?.description ?? "")
        insert.bind(12, record.reason)
        insert.bind(13, record.actor)
        insert.bind(14, record.createdAt.microseconds)
        try insert.run()
    }
}

extension SQLiteLedgerStore {
    public func saveBackfill(_ record: BackfillRecord) throws(LedgerError) {
        let insert = try database.prepare(
            """
            INSERT OR REPLACE INTO backfills (id, reason, actor, source, started_at, received, accepted, duplicate, late, adjusted, rejected,
                finished, reverted_at, revert_reason)
            VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
            """)
        defer { insert.reset() }
        insert.bind(1, record.id)
        insert.bind(2, record.reason)
        insert.bind(3, record.actor)
        insert.bind(4, record.source)
        insert.bind(5, record.startedAt.microseconds)
        insert.bind(6, record.counts.received)
        insert.bind(7, record.counts.accepted)
        insert.bind(8, record.counts.duplicate)
        insert.bind(9, record.counts.late)
        insert.bind(10, record.counts.adjusted)
        insert.bind(11, record.counts.rejected)
        insert.bind(12, record.finished ? 1 : 0)
        if let reverted = record.revertedAt { insert.bind(13, reverted.microseconds) } else { insert.bindNull(13) }
        insert.bind(14, record.revertReason)
        try insert.run()
    }

    public func backfills() throws(LedgerError) -> [BackfillRecord] {
        let select = try database.prepare(
            """
            SELECT id, reason, actor, source, started_at, received, accepted, duplicate, late, adjusted, rejected, finished, reverted_at,
                revert_reason
            FROM backfills ORDER BY started_at, id
            """)
        defer { select.reset() }
        var records: [BackfillRecord] = []
        while try select.step() {
            var counts = ReconciliationCounts()
            counts.received = select.int64(5)
            counts.accepted = select.int64(6)
            counts.duplicate = select.int64(7)
            counts.late = select.int64(8)
            counts.adjusted = select.int64(9)
            counts.rejected = select.int64(10)
            records.append(
                BackfillRecord(
                    id: select.text(0), reason: select.text(1), actor: select.text(2), source: select.text(3),
                    startedAt: EventTime(microseconds: select.int64(4)), counts: counts, finished: select.int64(11) != 0,
                    revertedAt: select.isNull(12) ? nil : EventTime(microseconds: select.int64(12)), revertReason: select.optionalText(13)))
        }
        return records
    }
}
