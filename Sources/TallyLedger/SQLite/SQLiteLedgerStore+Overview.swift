import TallyCore

/// The admin overview's reads: every tenant of a period in one statement per kind of cell, each
/// an index search per tenant on the primary keys (`reconciliation` by period, `usage_monthly`
/// by tenant, metric, month and dimension), and the agents from their batch records.
extension SQLiteLedgerStore {
    /// The tenants of the period (a reconciliation row in it) that match the search (`?2`, folded).
    private static let periodTenants = """
        SELECT tenant FROM reconciliation WHERE period = ?1 AND tenant <> '' AND tally_contains(tenant, ?2)
        """

    public func periodUsage(_ query: PeriodUsageQuery) throws(LedgerError) -> [TenantPeriodUsage] {
        let unfolded = try unfoldedForRead(tenant: nil)
        let period = query.period.description
        let search = query.foldedSearch
        var assembly = PeriodUsageAssembly(query)

        let tenants = try database.prepare("SELECT DISTINCT tenant FROM (\(Self.periodTenants))")
        defer { tenants.reset() }
        tenants.bind(1, period)
        tenants.bind(2, search)
        while try tenants.step() { assembly.addTenant(tenants.text(0)) }

        // The partial index holds only adjusted cells (late events are rare), so this scans little.
        let adjusted = try database.prepare(
            """
            SELECT DISTINCT tenant FROM usage_hourly INDEXED BY usage_hourly_adjustments
            WHERE billed_in = ?1 AND billed_in <> '' AND dimension = '' AND tally_contains(tenant, ?2)
            """)
        defer { adjusted.reset() }
        adjusted.bind(1, period)
        adjusted.bind(2, search)
        while try adjusted.step() { assembly.addAdjusted(adjusted.text(0)) }

        let cells = try database.prepare(
            """
            SELECT tenant, value, billed_in, sum, count, max, latest_ts, latest_fp, latest_quantity, min, level_delta, level_time FROM usage_monthly
            WHERE tenant IN (\(Self.periodTenants)) AND metric = ?3 AND hour = ?4 AND dimension = ?5
            """)
        defer { cells.reset() }
        for kind in Set(query.cells).sorted() {
            cells.reset()
            cells.bind(1, period)
            cells.bind(2, search)
            cells.bind(3, kind.metric)
            cells.bind(4, query.period.start.hourSinceEpoch)
            cells.bind(5, kind.dimension)
            while try cells.step() {
                let billedText = cells.text(2)
                var billedIn: BillingPeriod?
                if !billedText.isEmpty {
                    guard let billed = BillingPeriod(billedText) else { throw .corruptRow("usage_monthly billed_in '\(billedText)'") }
                    billedIn = billed
                }
                try assembly.add(tenant: cells.text(0), kind: kind, value: cells.text(1), billedIn: billedIn, try readAggregate(cells, from: 3))
            }
        }

        let distinct = try database.prepare(
            """
            SELECT tenant, COUNT(*) FROM unique_values
            WHERE tenant IN (\(Self.periodTenants)) AND metric = ?3 AND property = ?4 AND period = ?1 AND billed_in = ?1
            GROUP BY tenant
            """)
        defer { distinct.reset() }
        for key in Set(query.uniqueCounts).sorted(by: { ($0.metric, $0.property) < ($1.metric, $1.property) }) {
            distinct.reset()
            distinct.bind(1, period)
            distinct.bind(2, search)
            distinct.bind(3, key.metric)
            distinct.bind(4, key.property)
            while try distinct.step() { assembly.addDistinctValues(tenant: distinct.text(0), key: key, count: Int(distinct.int64(1))) }
        }
        try assembly.add(unfolded: unfolded)
        return assembly.answer()
    }

    public func agentActivity() throws(LedgerError) -> [AgentActivity] {
        var agents: [String: AgentActivity] = [:]
        let recorded = try database.prepare(
            """
            SELECT agent, MAX(seq), MAX(received_at), COUNT(*), SUM(accepted), SUM(duplicate), SUM(late), SUM(adjusted), SUM(rejected)
            FROM batches GROUP BY agent
            """)
        defer { recorded.reset() }
        while try recorded.step() {
            var events = ReconciliationCounts()
            events.accepted = recorded.int64(4)
            events.duplicate = recorded.int64(5)
            events.late = recorded.int64(6)
            events.adjusted = recorded.int64(7)
            events.rejected = recorded.int64(8)
            events.received = events.accepted + events.duplicate + events.late + events.rejected
            let agent = recorded.text(0)
            agents[agent] = AgentActivity(
                agent: agent, lastSequence: UInt64(bitPattern: recorded.int64(1)), lastBatchAt: EventTime(microseconds: recorded.int64(2)),
                batches: recorded.int64(3), events: events)
        }
        let pruned = try database.prepare("SELECT agent, through_seq FROM pruned_batches")
        defer { pruned.reset() }
        while try pruned.step() {
            let agent = pruned.text(0)
            let through = UInt64(bitPattern: pruned.int64(1))
            if var known = agents[agent] {
                known.lastSequence = max(known.lastSequence, through)
                agents[agent] = known
            } else {
                agents[agent] = AgentActivity(agent: agent, lastSequence: through, lastBatchAt: nil, batches: 0, events: ReconciliationCounts())
            }
        }
        return agents.values.sorted { $0.agent.utf8.lexicographicallyPrecedes($1.agent.utf8) }
    }
}
