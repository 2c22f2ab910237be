import NIOCore
import PostgresNIO
public import TallyCore

/// The billing reads and tables, as in `SQLiteLedgerStore+Billing`. A final invoice is written
/// with `ON CONFLICT DO NOTHING` on (tenant, period) and read back: whichever collector
/// finalises a closed period first, every collector then serves that one document.
extension PostgresLedgerStore {
    public func distinctValues(
        tenant: String, metric: String, property: String, period: BillingPeriod, billedThrough: BillingPeriod
    ) throws(LedgerError) -> Int {
        try cachedRead("distinctValues", [tenant, metric, property, period.description, billedThrough.description], rows: { _ in 1 }) {
            () throws(LedgerError) -> Int in
            try count(
                """
                SELECT COUNT(*) FROM unique_values WHERE tenant = \(tenant) AND metric = \(metric) AND property = \(property)
                AND period = \(period.description) AND billed_in <= \(billedThrough.description)
                """)
        }
    }

    public func adjustedPeriods(tenant: String, billedIn period: BillingPeriod) throws(LedgerError) -> [BillingPeriod] {
        let unfolded = try unfoldedForRead(tenant: tenant)
        let stored = try cachedRead("adjustedPeriods", [tenant, period.description], rows: { $0.count }, tablesOnly: true) {
            () throws(LedgerError) -> [BillingPeriod] in
            let rows = try session.query(
                """
                SELECT DISTINCT hour FROM usage_hourly
                WHERE tenant = \(tenant) AND billed_in = \(period.description) AND billed_in <> '' AND dimension = ''
                """, "reading adjusted periods")
            var periods: Set<BillingPeriod> = []
            for row in rows {
                let hour = try PostgresSchema.decode(row, Int64.self, "adjusted hour")
                periods.insert(BillingPeriod(containingHour: hour))
            }
            return periods.sorted()
        }
        return try unfolded?.adjustedPeriods(adding: stored, billedIn: period) ?? stored
    }

    public func hourlyTotals(
        tenant: String, metric: String, hours: Range<Int64>
    ) throws(LedgerError)
        -> [(hour: Int64, aggregate: UsageAggregate)]
    {
        let unfolded = try unfoldedForRead(tenant: tenant)
        let rows = try session.query(
            """
            SELECT hour, value, sum::text, count, max::text, latest_ts, latest_fp, latest_quantity, min::text, level_delta::text, level_time::text FROM usage_hourly
            WHERE tenant = \(tenant) AND metric = \(metric) AND hour >= \(hours.lowerBound) AND hour < \(hours.upperBound)
            AND dimension = '' ORDER BY hour
            """, "reading hourly totals")
        var result: [(hour: Int64, aggregate: UsageAggregate)] = []
        for row in rows {
            let (hour, _, sum, count, maximum, latestTime, latestPrint, latestQuantity, minimum, delta, time) = try Self.decodeCell(row)
            let aggregate = try Self.aggregate(sum, count, maximum, latestTime, latestPrint, latestQuantity, minimum, delta, time)
            try result.appendMergingHour(hour, aggregate)
        }
        return try unfolded?.hourlyTotals(adding: result, metric: metric, hours: hours) ?? result
    }

    public func tenants(in period: BillingPeriod) throws(LedgerError) -> [String] {
        // Reconciliation counts are folded from the aggregate log: merged, or folded first.
        let unfolded = try unfoldedReconciliation()
        let rows = try session.query(
            """
            SELECT DISTINCT tenant COLLATE "C" FROM reconciliation WHERE period = \(period.description) AND tenant <> ''
            ORDER BY 1
            """, "listing tenants")
        var tenants: [String] = []
        for row in rows { tenants.append(try PostgresSchema.decode(row, String.self, "tenant")) }
        guard let unfolded else { return tenants }
        var all = Set(tenants)
        for key in unfolded.keys where key.period == period.description && !key.tenant.isEmpty { all.insert(key.tenant) }
        return all.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
    }

    public func hasSeen(tenant: String, lookingFirstIn period: BillingPeriod) throws(LedgerError) -> Bool {
        // Reconciliation rows are never deleted: once seen, a tenant stays seen.
        if seenTenants.contains(tenant) { return true }
        let seen = try lookForTenant(tenant, lookingFirstIn: period)
        if seen { seenTenants.insert(tenant) }
        return seen
    }

    private func lookForTenant(_ tenant: String, lookingFirstIn period: BillingPeriod) throws(LedgerError) -> Bool {
        // Reconciliation counts are folded from the aggregate log: merged, or folded first.
        if let unfolded = try unfoldedReconciliation(), unfolded.keys.contains(where: { $0.tenant == tenant }) { return true }
        if try !session.query(
            "SELECT 1 FROM reconciliation WHERE period = \(period.description) AND tenant = \(tenant) LIMIT 1", "looking for a tenant"
        ).isEmpty {
            return true
        }
        return try !session.query("SELECT 1 FROM reconciliation WHERE tenant = \(tenant) LIMIT 1", "looking for a tenant").isEmpty
    }

    public func finalInvoice(tenant: String, period: BillingPeriod) throws(LedgerError) -> FinalInvoiceRecord? {
        let rows = try session.query(
            "SELECT json, sha256, finalized_at FROM final_invoices WHERE tenant = \(tenant) AND period = \(period.description)",
            "reading a final invoice")
        guard let row = rows.first else { return nil }
        let (json, sha256, finalizedAt): (String, String, Int64)
        do { (json, sha256, finalizedAt) = try row.decode((String, String, Int64).self) } catch {
            throw .corruptRow("final_invoices row: \(error)")
        }
        return FinalInvoiceRecord(tenant: tenant, period: period, json: json, sha256: sha256, finalizedAt: EventTime(microseconds: finalizedAt))
    }

    public func freezeInvoice(_ record: FinalInvoiceRecord) throws(LedgerError) -> FinalInvoiceRecord {
        try session.query(
            """
            INSERT INTO final_invoices (tenant, period, json, sha256, finalized_at)
            VALUES (\(record.tenant), \(record.period.description), \(record.json), \(record.sha256), \(record.finalizedAt.microseconds))
            ON CONFLICT (tenant, period) DO NOTHING
            """, "freezing an invoice")
        guard let stored = try finalInvoice(tenant: record.tenant, period: record.period) else {
            throw .corruptRow("final invoice of \(record.tenant) \(record.period) vanished after it was written")
        }
        return stored
    }

    public func exportRecord(identifier: String) throws(LedgerError) -> ExportRecord? {
        let rows = try session.query(
            """
            SELECT identifier, tenant, metric, hour, value, status, attempts, last_error, sent_at, attempted_at FROM usage_exports
            WHERE identifier = \(identifier)
            """, "reading an export record")
        return try rows.first.map { (row: PostgresRow) throws(LedgerError) in try Self.readExport(row) }
    }

    public func saveExportRecord(_ record: ExportRecord) throws(LedgerError) {
        try session.query(
            """
            INSERT INTO usage_exports (identifier, tenant, metric, hour, value, status, attempts, last_error, sent_at, attempted_at)
            VALUES (\(record.identifier), \(record.tenant), \(record.metric), \(record.hour), \(record.value.description),
                \(record.status.rawValue), \(Int32(record.attempts)), \(record.lastError), \(record.sentAt?.microseconds),
                \(record.attemptedAt?.microseconds))
            ON CONFLICT (identifier) DO UPDATE SET tenant = excluded.tenant, metric = excluded.metric, hour = excluded.hour,
                value = excluded.value, status = excluded.status, attempts = excluded.attempts, last_error = excluded.last_error,
                sent_at = excluded.sent_at, attempted_at = excluded.attempted_at
            """, "saving an export record")
    }

    public func claimExportRecord(_ record: ExportRecord) throws(LedgerError) -> Bool {
        let rows = try session.query(
            """
            INSERT INTO usage_exports (identifier, tenant, metric, hour, value, status, attempts, last_error, sent_at, attempted_at)
            VALUES (\(record.identifier), \(record.tenant), \(record.metric), \(record.hour), \(record.value.description),
                \(record.status.rawValue), \(Int32(record.attempts)), \(record.lastError), \(record.sentAt?.microseconds),
                \(record.attemptedAt?.microseconds))
            ON CONFLICT (identifier) DO NOTHING RETURNING identifier
            """, "claiming an export record")
        return !rows.isEmpty
    }

    public func exportRecords(tenant: String?) throws(LedgerError) -> [ExportRecord] {
        let rows = try session.query(
            """
            SELECT identifier, tenant, metric, hour, value, status, attempts, last_error, sent_at, attempted_at FROM usage_exports
            WHERE \(tenant)::text IS NULL OR tenant = \(tenant) ORDER BY identifier COLLATE "C"
            """, "reading export records")
        var records: [ExportRecord] = []
        for row in rows { records.append(try Self.readExport(row)) }
        return records
    }

    private static func readExport(_ row: PostgresRow) throws(LedgerError) -> ExportRecord {
        let r: (String, String, String, Int64, String, String, Int32, String?, Int64?, Int64?)
        do { r = try row.decode((String, String, String, Int64, String, String, Int32, String?, Int64?, Int64?).self) } catch {
            throw .corruptRow("usage_exports row: \(error)")
        }
        guard let status = ExportRecord.Status(rawValue: r.5) else { throw .corruptRow("usage_exports status '\(r.5)'") }
        return ExportRecord(
            identifier: r.0, tenant: r.1, metric: r.2, hour: r.3, value: try quantity(r.4, "usage_exports value"), status: status,
            attempts: Int(r.6), lastError: r.7, sentAt: r.8.map { EventTime(microseconds: $0) },
            attemptedAt: r.9.map { EventTime(microseconds: $0) })
    }
}
