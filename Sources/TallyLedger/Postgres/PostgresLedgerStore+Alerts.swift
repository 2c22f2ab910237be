import NIOCore
import PostgresNIO
public import TallyCore

/// Usage alert records, as in `SQLiteLedgerStore+Alerts`. Several collectors share them: a
/// crossing is claimed with `ON CONFLICT DO NOTHING`, and an attempt is leased by a conditional
/// `UPDATE … RETURNING`, so one collector sends a record at a time.
extension PostgresLedgerStore {
    static let alertColumns = """
        identifier, tenant, alert, period, metric, kind, threshold, observed, limit_value, crossed_at, status, attempts,
        last_error, attempted_at, delivered_at, next_attempt_at
        """

    public func claimAlert(_ record: AlertRecord) throws(LedgerError) -> Bool {
        let rows = try session.query(
            """
            INSERT INTO usage_alerts (identifier, tenant, alert, period, metric, kind, threshold, observed, limit_value, crossed_at,
                status, attempts, last_error, attempted_at, delivered_at, next_attempt_at)
            VALUES (\(record.identifier), \(record.tenant), \(record.alert), \(record.period.description), \(record.metric),
                \(record.kind), \(record.threshold), \(record.observed), \(record.limit), \(record.crossedAt.microseconds),
                \(record.status.rawValue), \(Int32(record.attempts)), \(record.lastError), \(record.attemptedAt?.microseconds),
                \(record.deliveredAt?.microseconds), \(record.nextAttemptAt.microseconds))
            ON CONFLICT (identifier) DO NOTHING RETURNING identifier
            """, "claiming an alert")
        return !rows.isEmpty
    }

    public func leaseAlert(identifier: String, now: EventTime, until: EventTime) throws(LedgerError) -> AlertRecord? {
        let rows = try session.query(
            """
            UPDATE usage_alerts SET attempts = attempts + 1, attempted_at = \(now.microseconds), next_attempt_at = \(until.microseconds)
            WHERE identifier = \(identifier) AND status = 'pending' AND next_attempt_at <= \(now.microseconds)
            RETURNING identifier, tenant, alert, period, metric, kind, threshold, observed, limit_value, crossed_at, status, attempts,
                last_error, attempted_at, delivered_at, next_attempt_at
            """, "leasing an alert")
        return try rows.first.map { (row: PostgresRow) throws(LedgerError) in try Self.readAlert(row) }
    }

    public func finishAlertAttempt(
        identifier: String, delivered: Bool, at: EventTime, error: String?, nextAttemptAt: EventTime
    ) throws(LedgerError) {
        let status = delivered ? AlertRecord.Status.delivered.rawValue : AlertRecord.Status.pending.rawValue
        let deliveredAt: Int64? = delivered ? at.microseconds : nil
        try session.query(
            """
            UPDATE usage_alerts SET status = \(status), delivered_at = \(deliveredAt), last_error = \(error),
                next_attempt_at = \(nextAttemptAt.microseconds)
            WHERE identifier = \(identifier) AND status = 'pending'
            """, "recording an alert's attempt")
    }

    public func dueAlerts(now: EventTime, limit: Int) throws(LedgerError) -> [AlertRecord] {
        let rows = try session.query(
            """
            SELECT identifier, tenant, alert, period, metric, kind, threshold, observed, limit_value, crossed_at, status, attempts,
                last_error, attempted_at, delivered_at, next_attempt_at
            FROM usage_alerts WHERE status = 'pending' AND next_attempt_at <= \(now.microseconds)
            ORDER BY crossed_at, identifier COLLATE "C" LIMIT \(Int64(limit))
            """, "reading due alerts")
        var records: [AlertRecord] = []
        for row in rows { records.append(try Self.readAlert(row)) }
        return records
    }

    public func alertRecords(tenant: String?, period: BillingPeriod?) throws(LedgerError) -> [AlertRecord] {
        let periodText = period?.description
        let rows = try session.query(
            """
            SELECT identifier, tenant, alert, period, metric, kind, threshold, observed, limit_value, crossed_at, status, attempts,
                last_error, attempted_at, delivered_at, next_attempt_at
            FROM usage_alerts WHERE (\(tenant)::text IS NULL OR tenant = \(tenant)) AND (\(periodText)::text IS NULL OR period = \(periodText))
            ORDER BY period, tenant COLLATE "C", alert COLLATE "C"
            """, "reading alerts")
        var records: [AlertRecord] = []
        for row in rows { records.append(try Self.readAlert(row)) }
        return records
    }

    private static func readAlert(_ row: PostgresRow) throws(LedgerError) -> AlertRecord {
        let a: (String, String, String, String, String?, String, String, String)
        let b: (String, Int64, String, Int32, String?, Int64?, Int64?, Int64)
        do {
            let r = try row.decode(
                (String, String, String, String, String?, String, String, String, String, Int64, String, Int32, String?, Int64?, Int64?, Int64).self)
            a = (r.0, r.1, r.2, r.3, r.4, r.5, r.6, r.7)
            b = (r.8, r.9, r.10, r.11, r.12, r.13, r.14, r.15)
        } catch {
            throw .corruptRow("usage_alerts row: \(error)")
        }
        guard let status = AlertRecord.Status(rawValue: b.2) else { throw .corruptRow("usage_alerts status '\(b.2)'") }
        guard let period = BillingPeriod(a.3) else { throw .corruptRow("usage_alerts period '\(a.3)'") }
        var record = AlertRecord(
            tenant: a.1, alert: a.2, period: period, metric: a.4, kind: a.5, threshold: a.6, observed: a.7, limit: b.0,
            crossedAt: EventTime(microseconds: b.1), status: status, attempts: Int(b.3), lastError: b.4,
            attemptedAt: b.5.map { EventTime(microseconds: $0) }, deliveredAt: b.6.map { EventTime(microseconds: $0) },
            nextAttemptAt: EventTime(microseconds: b.7))
        record.identifier = a.0
        return record
    }
}
