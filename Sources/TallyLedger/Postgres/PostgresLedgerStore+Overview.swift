import NIOCore
import PostgresNIO
import TallyCore

/// The admin overview's reads, as in `SQLiteLedgerStore+Overview`: every tenant of a period in
/// four statements whatever the number of tenants (the kinds of cells and the unique-count pairs
/// travel as arrays through `unnest`), folded first like every aggregate read here.
extension PostgresLedgerStore {
    public func periodUsage(_ query: PeriodUsageQuery) throws(LedgerError) -> [TenantPeriodUsage] {
        try flushAggregates()
        let kinds = Set(query.cells).sorted()
        let pairs = Set(query.uniqueCounts).sorted { ($0.metric, $0.property) < ($1.metric, $1.property) }
        var parameters = [query.period.description, query.foldedSearch.map { "=" + $0 } ?? "all"]
        parameters += kinds.map { "\($0.metric)\u{0}\($0.dimension)" } + ["|"] + pairs.map { "\($0.metric)\u{0}\($0.property)" }
        return try cachedRead("periodUsage", parameters, rows: { $0.count }) { () throws(LedgerError) -> [TenantPeriodUsage] in
            try readPeriodUsage(query, kinds: kinds, pairs: pairs)
        }
    }

    private func readPeriodUsage(
        _ query: PeriodUsageQuery, kinds: [MetricDimension], pairs: [UniqueCountKey]
    ) throws(LedgerError) -> [TenantPeriodUsage] {
        let period = query.period.description
        let search = query.foldedSearch
        var assembly = PeriodUsageAssembly(query)
        // `translate` folds exactly A–Z, as `PeriodUsageQuery.foldASCII` does; `strpos` compares
        // code points, as the SQLite store compares bytes of UTF-8.
        let upper = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
        let lower = "abcdefghijklmnopqrstuvwxyz"

        for row in try session.query(
            """
            SELECT DISTINCT tenant FROM reconciliation WHERE period = \(period) AND tenant <> ''
            AND (\(search)::text IS NULL OR strpos(translate(tenant, \(upper), \(lower)), \(search)) > 0)
            """, "listing the period's tenants")
        {
            assembly.addTenant(try PostgresSchema.decode(row, String.self, "tenant"))
        }

        for row in try session.query(
            """
            SELECT DISTINCT tenant FROM usage_hourly WHERE billed_in = \(period) AND billed_in <> '' AND dimension = ''
            AND (\(search)::text IS NULL OR strpos(translate(tenant, \(upper), \(lower)), \(search)) > 0)
            """, "listing the period's adjusted tenants")
        {
            assembly.addAdjusted(try PostgresSchema.decode(row, String.self, "tenant"))
        }

        if !kinds.isEmpty {
            let metrics = kinds.map(\.metric)
            let dimensions = kinds.map(\.dimension)
            for row in try session.query(
                """
                SELECT m.tenant, m.metric, m.dimension, m.value, m.billed_in, m.sum::text, m.count, m.max::text, m.latest_ts,
                    m.latest_fp, m.latest_quantity, m.min::text, m.level_delta::text, m.level_time::text
                FROM usage_monthly m
                JOIN unnest(\(metrics)::text[], \(dimensions)::text[]) AS k(metric, dimension)
                    ON m.metric = k.metric AND m.dimension = k.dimension
                WHERE m.hour = \(query.period.start.hourSinceEpoch) AND m.tenant IN (
                    SELECT tenant FROM reconciliation WHERE period = \(period) AND tenant <> ''
                    AND (\(search)::text IS NULL OR strpos(translate(tenant, \(upper), \(lower)), \(search)) > 0))
                """, "reading the period's monthly cells")
            {
                let r: (String, String, String, String, String, String, Int64, String, Int64, ByteBuffer, String, String?, String, String)
                do {
                    r = try row.decode(
                        (String, String, String, String, String, String, Int64, String, Int64, ByteBuffer, String, String?, String, String).self)
                } catch {
                    throw .corruptRow("usage_monthly row: \(error)")
                }
                var billedIn: BillingPeriod?
                if !r.4.isEmpty {
                    guard let billed = BillingPeriod(r.4) else { throw .corruptRow("usage_monthly billed_in '\(r.4)'") }
                    billedIn = billed
                }
                try assembly.add(
                    tenant: r.0, kind: MetricDimension(metric: r.1, dimension: r.2), value: r.3, billedIn: billedIn,
                    try Self.aggregate(r.5, r.6, r.7, r.8, r.9, r.10, r.11, r.12, r.13))
            }
        }

        if !pairs.isEmpty {
            let metrics = pairs.map(\.metric)
            let properties = pairs.map(\.property)
            for row in try session.query(
                """
                SELECT u.tenant, u.metric, u.property, COUNT(*) FROM unique_values u
                JOIN unnest(\(metrics)::text[], \(properties)::text[]) AS k(metric, property)
                    ON u.metric = k.metric AND u.property = k.property
                WHERE u.period = \(period) AND u.billed_in = \(period) AND u.tenant IN (
                    SELECT tenant FROM reconciliation WHERE period = \(period) AND tenant <> ''
                    AND (\(search)::text IS NULL OR strpos(translate(tenant, \(upper), \(lower)), \(search)) > 0))
                GROUP BY u.tenant, u.metric, u.property
                """, "counting the period's distinct values")
            {
                let r: (String, String, String, Int64)
                do { r = try row.decode((String, String, String, Int64).self) } catch { throw .corruptRow("distinct values row: \(error)") }
                assembly.addDistinctValues(tenant: r.0, key: UniqueCountKey(metric: r.1, property: r.2), count: Int(r.3))
            }
        }
        return assembly.answer()
    }

    public func agentActivity() throws(LedgerError) -> [AgentActivity] {
        var agents: [String: AgentActivity] = [:]
        for row in try session.query(
            """
            SELECT agent, MAX(seq), MAX(received_at), COUNT(*), SUM(accepted), SUM(duplicate), SUM(late), SUM(adjusted), SUM(rejected)
            FROM batches GROUP BY agent
            """, "reading agent activity")
        {
            let r: (String, Int64, Int64, Int64, Int64, Int64, Int64, Int64, Int64)
            do { r = try row.decode((String, Int64, Int64, Int64, Int64, Int64, Int64, Int64, Int64).self) } catch {
                throw .corruptRow("agent activity row: \(error)")
            }
            var events = ReconciliationCounts()
            events.accepted = r.4
            events.duplicate = r.5
            events.late = r.6
            events.adjusted = r.7
            events.rejected = r.8
            events.received = r.4 + r.5 + r.6 + r.8
            agents[r.0] = AgentActivity(
                agent: r.0, lastSequence: UInt64(bitPattern: r.1), lastBatchAt: EventTime(microseconds: r.2), batches: r.3, events: events)
        }
        for row in try session.query("SELECT agent, through_seq FROM pruned_batches", "reading pruned batches") {
            let r: (String, Int64)
            do { r = try row.decode((String, Int64).self) } catch { throw .corruptRow("pruned batches row: \(error)") }
            let through = UInt64(bitPattern: r.1)
            if var known = agents[r.0] {
                known.lastSequence = max(known.lastSequence, through)
                agents[r.0] = known
            } else {
                agents[r.0] = AgentActivity(agent: r.0, lastSequence: through, lastBatchAt: nil, batches: 0, events: ReconciliationCounts())
            }
        }
        return agents.values.sorted { $0.agent.utf8.lexicographicallyPrecedes($1.agent.utf8) }
    }
}
