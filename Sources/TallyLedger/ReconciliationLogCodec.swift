import TallyCore

/// A batch's reconciliation counts as they travel through the aggregate log
/// (`aggregate_log.reconciliation`, on both backends), to be summed into the `reconciliation`
/// table by the fold.
///
/// Upserting each batch's rows directly costs one index lookup and one row update per
/// (period, tenant) of every batch: a third of the database's time in `tally-bench cluster`,
/// and 14% of the SQLite writer thread's in `tally-bench ingest` (about 630 upserts per batch
/// of 1,000 events from the reference workload's 1,000 tenants). The fold sums every logged
/// batch first, so each row is updated once per fold.
///
/// Layout (every integer an unsigned LEB128 varint, every string a varint byte length and UTF-8):
/// version (1), agent, row count, then per row: period (`YYYY-MM`), tenant, received, accepted, duplicate, late, adjusted, rejected.
enum ReconciliationLogCodec {
    static let version: UInt64 = 1

    struct Key: Hashable, Comparable {
        var period: String
        var tenant: String
        var agent: String

        static func < (a: Key, b: Key) -> Bool { (a.period, a.tenant, a.agent) < (b.period, b.tenant, b.agent) }

        /// Whether `self` comes before `other` by (period, tenant, agent) compared as UTF-8
        /// bytes: the order of the `reconciliation` table's reads (`COLLATE "C"`).
        func inByteOrder(before other: Key) -> Bool {
            for (mine, theirs) in [(period, other.period), (tenant, other.tenant), (agent, other.agent)] where mine != theirs {
                return mine.utf8.lexicographicallyPrecedes(theirs.utf8)
            }
            return false
        }
    }

    static func encode(agent: String, _ deltas: [LedgerPlan.ReconciliationDelta]) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(16 + deltas.count * 40)
        bytes.appendVarint(version)
        bytes.appendVarintString(agent)
        bytes.appendVarint(UInt64(deltas.count))
        for delta in deltas {
            bytes.appendVarintString(delta.period.description)
            bytes.appendVarintString(delta.tenant)
            for count in [
                delta.counts.received, delta.counts.accepted, delta.counts.duplicate, delta.counts.late, delta.counts.adjusted,
                delta.counts.rejected,
            ] {
                bytes.appendVarint(UInt64(clamping: count))
            }
        }
        return bytes
    }

    /// Adds the blob's rows to `sums`; a blob that does not parse is a corrupt log row.
    static func decode(_ blob: UnsafeRawBufferPointer, into sums: inout ReconciliationSums) throws(LedgerError) {
        var reader = ByteReader(blob)
        func number() throws(LedgerError) -> Int64 {
            guard let value = reader.varint(), value <= UInt128(Int64.max) else { throw corrupt() }
            return Int64(value)
        }
        func text() throws(LedgerError) -> String {
            let length = try number()
            guard length <= Int64(reader.remaining), let text = reader.utf8(count: Int(length)) else { throw corrupt() }
            return text
        }
        guard try number() == Int64(version) else { throw corrupt() }
        let agent = try text()
        let rows = try number()
        guard rows <= Int64(reader.remaining) else { throw corrupt() }
        for _ in 0..<rows {
            let key = Key(period: try text(), tenant: try text(), agent: agent)
            var counts = ReconciliationCounts()
            counts.received = try number()
            counts.accepted = try number()
            counts.duplicate = try number()
            counts.late = try number()
            counts.adjusted = try number()
            counts.rejected = try number()
            sums[key, default: ReconciliationCounts()].add(counts)
        }
        guard reader.remaining == 0 else { throw corrupt() }
    }

    private static func corrupt() -> LedgerError { .corruptRow("an aggregate log row's reconciliation counts do not parse") }

    /// A reconciliation row as a read hands it on: period (as stored), tenant, agent, counts.
    typealias Row = (period: String, tenant: String, agent: String, counts: ReconciliationCounts)

    /// A reconciliation read's rows: the table's (`stored`, in the table's order), with the
    /// `unfolded` counts of the filter's rows added when there are any, then in the table's
    /// order again, (period, tenant, agent) in byte order.
    static func merged(_ filter: ReconciliationFilter, stored: [Row], unfolded: ReconciliationSums?) -> [Row] {
        guard let unfolded else { return stored }
        var rows: ReconciliationSums = [:]
        for row in stored { rows[Key(period: row.period, tenant: row.tenant, agent: row.agent)] = row.counts }
        for (key, counts) in unfolded
        where (filter.period.map { $0.description == key.period } ?? true) && (filter.tenant.map { $0 == key.tenant } ?? true)
            && (filter.agent.map { $0 == key.agent } ?? true)
        {
            rows[key, default: ReconciliationCounts()].add(counts)
        }
        return rows.sorted(by: { $0.key.inByteOrder(before: $1.key) }).map { ($0.key.period, $0.key.tenant, $0.key.agent, $0.value) }
    }
}

/// Reconciliation counts summed per (period, tenant, agent): what a fold adds to the table,
/// and what a merging reader adds to its rows.
typealias ReconciliationSums = [ReconciliationLogCodec.Key: ReconciliationCounts]
