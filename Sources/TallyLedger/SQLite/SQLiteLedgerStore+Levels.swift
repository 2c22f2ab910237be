import TallyCore

/// The level rows of `weighted_sum` metrics (``Levels``), inside a batch's transaction: the
/// writer is the only connection that writes, so the neighbourhood it reads cannot change before
/// its rows are in.
extension SQLiteLedgerStore {
    /// Adds the level changes of `plan`'s level events to its cells and stores their rows.
    func writeLevels(_ plan: inout LedgerPlan) throws(LedgerError) {
        try plan.completeLevels { (series, first, last) throws(LedgerError) in try levelNeighbourhood(series, first, last) }
        let insert = statements.insertLevel
        for event in plan.levels {
            insert.bind(1, event.series.tenant)
            insert.bind(2, event.series.metric)
            insert.bind(3, event.row.key.timestamp.microseconds)
            insert.bind(4, fingerprint: event.row.key.fingerprint)
            insert.bind(5, event.row.quantity.description)
            try insert.run()
        }
    }

    /// `series`' stored rows around `first ... last`, sorted by key.
    public func levelNeighbourhood(_ series: Levels.Series, _ first: RawKey, _ last: RawKey) throws(LedgerError) -> [Levels.Row] {
        let select = statements.selectLevelNeighbourhood
        defer { select.reset() }
        select.bind(1, series.tenant)
        select.bind(2, series.metric)
        select.bind(3, first.timestamp.microseconds)
        select.bind(4, fingerprint: first.fingerprint)
        select.bind(5, last.timestamp.microseconds)
        select.bind(6, fingerprint: last.fingerprint)
        var rows: [Levels.Row] = []
        while try select.step() {
            guard let fingerprint = Fingerprint(bytes: select.blob(1)) else { throw .corruptRow("levels fingerprint") }
            rows.append(
                Levels.Row(
                    key: RawKey(timestamp: EventTime(microseconds: select.int64(0)), fingerprint: fingerprint),
                    quantity: try Self.quantity(select.text(2), "levels quantity")))
        }
        return rows.sorted { $0.key < $1.key }
    }
}
