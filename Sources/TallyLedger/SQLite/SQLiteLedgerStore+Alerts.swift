public import TallyCore

/// Usage alert records in `usage_alerts` (created with the billing tables, on first use).
extension SQLiteLedgerStore {
    static let alertColumns = """
        identifier, tenant, alert, period, metric, kind, threshold, observed, limit_value, crossed_at, status, attempts,
        last_error, attempted_at, delivered_at, next_attempt_at
        """

    public func claimAlert(_ record: AlertRecord) throws(LedgerError) -> Bool {
        let insert = try billingStatement(
            """
            INSERT INTO usage_alerts (\(Self.alertColumns))
            VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16) ON CONFLICT (identifier) DO NOTHING
            """)
        insert.bind(1, record.identifier)
        insert.bind(2, record.tenant)
        insert.bind(3, record.alert)
        insert.bind(4, record.period.description)
        insert.bind(5, record.metric)
        insert.bind(6, record.kind)
        insert.bind(7, record.threshold)
        insert.bind(8, record.observed)
        insert.bind(9, record.limit)
        insert.bind(10, record.crossedAt.microseconds)
        insert.bind(11, record.status.rawValue)
        insert.bind(12, record.attempts)
        insert.bind(13, record.lastError)
        if let time = record.attemptedAt { insert.bind(14, time.microseconds) } else { insert.bindNull(14) }
        if let time = record.deliveredAt { insert.bind(15, time.microseconds) } else { insert.bindNull(15) }
        insert.bind(16, record.nextAttemptAt.microseconds)
        try insert.run()
        return database.changes == 1
    }

    public func leaseAlert(identifier: String, now: EventTime, until: EventTime) throws(LedgerError) -> AlertRecord? {
        // One connection writes this ledger, so the update and the read that follows it are not
        // interleaved with another lease.
        let update = try billingStatement(
            """
            UPDATE usage_alerts SET attempts = attempts + 1, attempted_at = ?2, next_attempt_at = ?3
            WHERE identifier = ?1 AND status = 'pending' AND next_attempt_at <= ?2
            """)
        update.bind(1, identifier)
        update.bind(2, now.microseconds)
        update.bind(3, until.microseconds)
        try update.run()
        guard database.changes == 1 else { return nil }
        return try alertRecord(identifier: identifier)
    }

    public func finishAlertAttempt(
        identifier: String, delivered: Bool, at: EventTime, error: String?, nextAttemptAt: EventTime
    ) throws(LedgerError) {
        let update = try billingStatement(
            """
            UPDATE usage_alerts SET status = ?2, delivered_at = ?3, last_error = ?4, next_attempt_at = ?5
            WHERE identifier = ?1 AND status = 'pending'
            """)
        update.bind(1, identifier)
        update.bind(2, delivered ? AlertRecord.Status.delivered.rawValue : AlertRecord.Status.pending.rawValue)
        if delivered { update.bind(3, at.microseconds) } else { update.bindNull(3) }
        update.bind(4, error)
        update.bind(5, nextAttemptAt.microseconds)
        try update.run()
    }

    public func dueAlerts(now: EventTime, limit: Int) throws(LedgerError) -> [AlertRecord] {
        let select = try billingStatement(
            """
            SELECT \(Self.alertColumns) FROM usage_alerts
            WHERE status = 'pending' AND next_attempt_at <= ?1 ORDER BY crossed_at, identifier LIMIT ?2
            """)
        defer { select.reset() }
        select.bind(1, now.microseconds)
        select.bind(2, limit)
        var records: [AlertRecord] = []
        while try select.step() { records.append(try readAlert(select)) }
        return records
    }

    public func alertRecords(tenant: String?, period: BillingPeriod?) throws(LedgerError) -> [AlertRecord] {
        let select = try billingStatement(
            """
            SELECT \(Self.alertColumns) FROM usage_alerts
            WHERE (?1 IS NULL OR tenant = ?1) AND (?2 IS NULL OR period = ?2) ORDER BY period, tenant, alert
            """)
        defer { select.reset() }
        select.bind(1, tenant)
        select.bind(2, period?.description)
        var records: [AlertRecord] = []
        while try select.step() { records.append(try readAlert(select)) }
        return records
    }

    private func alertRecord(identifier: String) throws(LedgerError) -> AlertRecord? {
        let select = try billingStatement("SELECT \(Self.alertColumns) FROM usage_alerts WHERE identifier = ?1")
        defer { select.reset() }
        select.bind(1, identifier)
        return try select.step() ? try readAlert(select) : nil
    }

    private func readAlert(_ row: SQLiteStatement) throws(LedgerError) -> AlertRecord {
        guard let status = AlertRecord.Status(rawValue: row.text(10)) else { throw .corruptRow("usage_alerts status '\(row.text(10))'") }
        guard let period = BillingPeriod(row.text(3)) else { throw .corruptRow("usage_alerts period '\(row.text(3))'") }
        var record = AlertRecord(
            tenant: row.text(1), alert: row.text(2), period: period, metric: row.optionalText(4), kind: row.text(5),
            threshold: row.text(6), observed: row.text(7), limit: row.text(8), crossedAt: EventTime(microseconds: row.int64(9)),
            status: status, attempts: Int(row.int64(11)), lastError: row.optionalText(12),
            attemptedAt: row.isNull(13) ? nil : EventTime(microseconds: row.int64(13)),
            deliveredAt: row.isNull(14) ? nil : EventTime(microseconds: row.int64(14)),
            nextAttemptAt: EventTime(microseconds: row.int64(15)))
        record.identifier = row.text(0)
        return record
    }
}
