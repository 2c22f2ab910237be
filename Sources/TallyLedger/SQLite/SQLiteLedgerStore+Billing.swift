import CSQLite
public import TallyCore

/// The collector's billing tables and the aggregate reads invoices are priced from. The tables
/// are created on first use (they are not part of the ingest schema):
/// - `final_invoices (tenant, period)`: the canonical JSON of a finalised invoice and its SHA-256.
///   Rows are inserted once and never updated.
/// - `usage_exports (identifier)`: what was sent to a billing platform, with attempts and status.
/// - `usage_alerts (identifier)`: each threshold crossed per tenant and period, with its webhook's
///   attempts and status (`SQLiteLedgerStore+Alerts`).
extension SQLiteLedgerStore {
    static let billingTables = """
        CREATE TABLE IF NOT EXISTS final_invoices (
            tenant TEXT NOT NULL,
            period TEXT NOT NULL,
            json TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            finalized_at INTEGER NOT NULL,
            PRIMARY KEY (tenant, period)
        ) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS usage_exports (
            identifier TEXT PRIMARY KEY,
            tenant TEXT NOT NULL,
            metric TEXT NOT NULL,
            hour INTEGER NOT NULL,
            value TEXT NOT NULL,
            status TEXT NOT NULL,
            attempts INTEGER NOT NULL,
            last_error TEXT,
            sent_at INTEGER,
            attempted_at INTEGER
        ) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS usage_alerts (
            identifier TEXT PRIMARY KEY,
            tenant TEXT NOT NULL,
            alert TEXT NOT NULL,
            period TEXT NOT NULL,
            metric TEXT,
            kind TEXT NOT NULL,
            threshold TEXT NOT NULL,
            observed TEXT NOT NULL,
            limit_value TEXT NOT NULL,
            crossed_at INTEGER NOT NULL,
            status TEXT NOT NULL,
            attempts INTEGER NOT NULL,
            last_error TEXT,
            attempted_at INTEGER,
            delivered_at INTEGER,
            next_attempt_at INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX IF NOT EXISTS usage_alerts_due ON usage_alerts (status, next_attempt_at);
        """

    /// Prepares `sql`, creating the billing tables first if they do not exist yet.
    func billingStatement(_ sql: String) throws(LedgerError) -> SQLiteStatement {
        do {
            return try database.prepare(sql)
        } catch {
            try database.execute(Self.billingTables)
            // A ledger whose usage_exports predates attempted_at gets it (an error: it has it).
            try? database.execute("ALTER TABLE usage_exports ADD COLUMN attempted_at INTEGER")
            return try database.prepare(sql)
        }
    }

    public func distinctValues(
        tenant: String, metric: String, property: String, period: BillingPeriod, billedThrough: BillingPeriod
    ) throws(LedgerError) -> Int {
        let select = try database.prepare(
            """
            SELECT COUNT(*) FROM unique_values
            WHERE tenant = ?1 AND metric = ?2 AND property = ?3 AND period = ?4 AND billed_in <= ?5
            """)
        defer { select.reset() }
        select.bind(1, tenant)
        select.bind(2, metric)
        select.bind(3, property)
        select.bind(4, period.description)
        select.bind(5, billedThrough.description)
        return try select.step() ? Int(select.int64(0)) : 0
    }

    public func adjustedPeriods(tenant: String, billedIn period: BillingPeriod) throws(LedgerError) -> [BillingPeriod] {
        let unfolded = try unfoldedForRead(tenant: tenant)
        // Uses the partial index usage_hourly_adjustments (tenant, metric, billed_in).
        let select = try database.prepare(
            "SELECT DISTINCT hour FROM usage_hourly WHERE tenant = ?1 AND billed_in = ?2 AND billed_in <> '' AND dimension = ''")
        defer { select.reset() }
        select.bind(1, tenant)
        select.bind(2, period.description)
        var periods: Set<BillingPeriod> = []
        while try select.step() {
            periods.insert(BillingPeriod(containingHour: select.int64(0)))
        }
        return try unfolded?.adjustedPeriods(adding: periods, billedIn: period) ?? periods.sorted()
    }

    public func hourlyTotals(
        tenant: String, metric: String, hours: Range<Int64>
    ) throws(LedgerError)
        -> [(hour: Int64, aggregate: UsageAggregate)]
    {
        let unfolded = try unfoldedForRead(tenant: tenant)
        let select = try database.prepare(
            """
            SELECT hour, sum, count, max, latest_ts, latest_fp, latest_quantity, min, level_delta, level_time FROM usage_hourly
            WHERE tenant = ?1 AND metric = ?2 AND hour >= ?3 AND hour < ?4 AND dimension = '' ORDER BY hour
            """)
        defer { select.reset() }
        select.bind(1, tenant)
        select.bind(2, metric)
        select.bind(3, hours.lowerBound)
        select.bind(4, hours.upperBound)
        var result: [(hour: Int64, aggregate: UsageAggregate)] = []
        while try select.step() {
            let hour = select.int64(0)
            let aggregate = try readAggregate(select, from: 1)
            try result.appendMergingHour(hour, aggregate)
        }
        return try unfolded?.hourlyTotals(adding: result, metric: metric, hours: hours) ?? result
    }

    public func tenants(in period: BillingPeriod) throws(LedgerError) -> [String] {
        let select = try database.prepare("SELECT DISTINCT tenant FROM reconciliation WHERE period = ?1 AND tenant <> '' ORDER BY tenant")
        defer { select.reset() }
        select.bind(1, period.description)
        var tenants: [String] = []
        while try select.step() { tenants.append(select.text(0)) }
        return tenants
    }

    public func hasSeen(tenant: String, lookingFirstIn period: BillingPeriod) throws(LedgerError) -> Bool {
        let inPeriod = try database.prepare("SELECT 1 FROM reconciliation WHERE period = ?1 AND tenant = ?2 LIMIT 1")
        defer { inPeriod.reset() }
        inPeriod.bind(1, period.description)
        inPeriod.bind(2, tenant)
        if try inPeriod.step() { return true }
        let anywhere = try database.prepare("SELECT 1 FROM reconciliation WHERE tenant = ?1 LIMIT 1")
        defer { anywhere.reset() }
        anywhere.bind(1, tenant)
        return try anywhere.step()
    }

    public func finalInvoice(tenant: String, period: BillingPeriod) throws(LedgerError) -> FinalInvoiceRecord? {
        let select = try billingStatement(
            "SELECT json, sha256, finalized_at FROM final_invoices WHERE tenant = ?1 AND period = ?2")
        defer { select.reset() }
        select.bind(1, tenant)
        select.bind(2, period.description)
        guard try select.step() else { return nil }
        return FinalInvoiceRecord(
            tenant: tenant, period: period, json: select.text(0), sha256: select.text(1),
            finalizedAt: EventTime(microseconds: select.int64(2)))
    }

    public func freezeInvoice(_ record: FinalInvoiceRecord) throws(LedgerError) -> FinalInvoiceRecord {
        let insert = try billingStatement(
            "INSERT OR IGNORE INTO final_invoices (tenant, period, json, sha256, finalized_at) VALUES (?1, ?2, ?3, ?4, ?5)")
        insert.bind(1, record.tenant)
        insert.bind(2, record.period.description)
        insert.bind(3, record.json)
        insert.bind(4, record.sha256)
        insert.bind(5, record.finalizedAt.microseconds)
        try insert.run()
        guard let stored = try finalInvoice(tenant: record.tenant, period: record.period) else {
            throw .corruptRow("final invoice of \(record.tenant) \(record.period) vanished after it was written")
        }
        return stored
    }

    public func exportRecord(identifier: String) throws(LedgerError) -> ExportRecord? {
        let select = try billingStatement(
            """
            SELECT identifier, tenant, metric, hour, value, status, attempts, last_error, sent_at, attempted_at FROM usage_exports
            WHERE identifier = ?1
            """)
        defer { select.reset() }
        select.bind(1, identifier)
        return try select.step() ? try readExport(select) : nil
    }

    public func saveExportRecord(_ record: ExportRecord) throws(LedgerError) {
        let upsert = try billingStatement(
            """
            INSERT OR REPLACE INTO usage_exports (identifier, tenant, metric, hour, value, status, attempts, last_error, sent_at, attempted_at)
            VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
            """)
        upsert.bind(1, record.identifier)
        upsert.bind(2, record.tenant)
        upsert.bind(3, record.metric)
        upsert.bind(4, record.hour)
        upsert.bind(5, record.value.description)
        upsert.bind(6, record.status.rawValue)
        upsert.bind(7, record.attempts)
        upsert.bind(8, record.lastError)
        if let sentAt = record.sentAt { upsert.bind(9, sentAt.microseconds) } else { upsert.bindNull(9) }
        if let attemptedAt = record.attemptedAt { upsert.bind(10, attemptedAt.microseconds) } else { upsert.bindNull(10) }
        try upsert.run()
    }

    public func claimExportRecord(_ record: ExportRecord) throws(LedgerError) -> Bool {
        let insert = try billingStatement(
            """
            INSERT INTO usage_exports (identifier, tenant, metric, hour, value, status, attempts, last_error, sent_at, attempted_at)
            VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT (identifier) DO NOTHING
            """)
        insert.bind(1, record.identifier)
        insert.bind(2, record.tenant)
        insert.bind(3, record.metric)
        insert.bind(4, record.hour)
        insert.bind(5, record.value.description)
        insert.bind(6, record.status.rawValue)
        insert.bind(7, record.attempts)
        insert.bind(8, record.lastError)
        if let sentAt = record.sentAt { insert.bind(9, sentAt.microseconds) } else { insert.bindNull(9) }
        if let attemptedAt = record.attemptedAt { insert.bind(10, attemptedAt.microseconds) } else { insert.bindNull(10) }
        try insert.run()
        return database.changes == 1
    }

    public func exportRecords(tenant: String?) throws(LedgerError) -> [ExportRecord] {
        let select = try billingStatement(
            """
            SELECT identifier, tenant, metric, hour, value, status, attempts, last_error, sent_at, attempted_at FROM usage_exports
            WHERE ?1 IS NULL OR tenant = ?1 ORDER BY identifier
            """)
        defer { select.reset() }
        select.bind(1, tenant)
        var records: [ExportRecord] = []
        while try select.step() { records.append(try readExport(select)) }
        return records
    }

    private func readExport(_ row: SQLiteStatement) throws(LedgerError) -> ExportRecord {
        guard let status = ExportRecord.Status(rawValue: row.text(5)) else { throw .corruptRow("usage_exports status '\(row.text(5))'") }
        return ExportRecord(
            identifier: row.text(0), tenant: row.text(1), metric: row.text(2), hour: row.int64(3),
            value: try Self.quantity(row.text(4), "usage_exports value"), status: status, attempts: Int(row.int64(6)),
            lastError: row.optionalText(7), sentAt: row.isNull(8) ? nil : EventTime(microseconds: row.int64(8)),
            attemptedAt: row.isNull(9) ? nil : EventTime(microseconds: row.int64(9)))
    }
}
