import NIOCore
import PostgresNIO
import TallyCore

/// The level rows of `weighted_sum` metrics (``Levels``), inside a batch's transaction. Several
/// collectors write at once, so each series is locked (an advisory transaction lock, taken in
/// series order) before its neighbourhood is read: two batches placing events of one series one
/// after the other see each other's rows, and no change is computed against a stale level.
extension PostgresLedgerStore {
    /// Adds the level changes of `plan`'s level events to its cells and stores their rows.
    func writeLevels(_ plan: inout LedgerPlan) throws(LedgerError) {
        for (series, _) in plan.levelSeries {
            try session.query(
                """
                SELECT pg_advisory_xact_lock(\(PostgresSchema.levelLockNamespace), hashtext(\(series.tenant) || '/' || \(series.metric)))
                """, "locking the level series \(series.tenant)/\(series.metric)")
        }
        try plan.completeLevels { (series, first, last) throws(LedgerError) in try levelNeighbourhood(series, first, last) }
        let events = plan.levels
        try session.query(
            """
            INSERT INTO levels (tenant, metric, ts, fingerprint, quantity)
            SELECT * FROM unnest(\(events.map(\.series.tenant))::text[], \(events.map(\.series.metric))::text[],
                \(events.map(\.row.key.timestamp.microseconds))::bigint[],
                \(events.map { ByteBuffer(bytes: $0.row.key.fingerprint.bytes) })::bytea[], \(events.map(\.row.quantity.description))::text[])
            """, "recording level events")
    }

    /// `series`' stored rows around `first ... last`, sorted by key.
    public func levelNeighbourhood(_ series: Levels.Series, _ first: RawKey, _ last: RawKey) throws(LedgerError) -> [Levels.Row] {
        let firstPrint = ByteBuffer(bytes: first.fingerprint.bytes)
        let lastPrint = ByteBuffer(bytes: last.fingerprint.bytes)
        let rows = try session.query(
            """
            (SELECT ts, fingerprint, quantity FROM levels
                WHERE tenant = \(series.tenant) AND metric = \(series.metric) AND (ts, fingerprint) < (\(first.timestamp.microseconds), \(firstPrint))
                ORDER BY ts DESC, fingerprint DESC LIMIT 1)
            UNION ALL
            (SELECT ts, fingerprint, quantity FROM levels
                WHERE tenant = \(series.tenant) AND metric = \(series.metric)
                    AND (ts, fingerprint) >= (\(first.timestamp.microseconds), \(firstPrint))
                    AND (ts, fingerprint) <= (\(last.timestamp.microseconds), \(lastPrint)))
            UNION ALL
            (SELECT ts, fingerprint, quantity FROM levels
                WHERE tenant = \(series.tenant) AND metric = \(series.metric) AND (ts, fingerprint) > (\(last.timestamp.microseconds), \(lastPrint))
                ORDER BY ts, fingerprint LIMIT 1)
            """, "reading the level series \(series.tenant)/\(series.metric)")
        var result: [Levels.Row] = []
        for row in rows {
            let decoded: (Int64, ByteBuffer, String)
            do { decoded = try row.decode((Int64, ByteBuffer, String).self) } catch { throw .corruptRow("levels row: \(error)") }
            guard let fingerprint = Fingerprint(bytes: Array(decoded.1.readableBytesView)) else { throw .corruptRow("levels fingerprint") }
            result.append(
                Levels.Row(
                    key: RawKey(timestamp: EventTime(microseconds: decoded.0), fingerprint: fingerprint),
                    quantity: try Self.quantity(decoded.2, "levels quantity")))
        }
        return result.sorted { $0.key < $1.key }
    }
}
