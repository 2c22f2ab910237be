import TallyLedger

/// One `aggregate_log` row, in whichever layout its first word says (sectioned by tenant or
/// flat). Checks: the decoded cells, encoded again in both layouts, decode to the same cells;
/// in the sectioned layout, reading one tenant gives exactly that tenant's cells.
public func fuzzAggregateLog(_ bytes: UnsafeRawBufferPointer) {
    var cells = AggregateCells()
    do {
        try AggregateLogCodec.decode(bytes, into: &cells)
    } catch {
        return
    }
    for layout in [AggregateLogCodec.Layout.byTenant, .flat] {
        let encoded = AggregateLogCodec.encode(cells, layout: layout)
        var again = AggregateCells()
        do {
            try AggregateLogCodec.decode(encoded, into: &again)
        } catch {
            finding("\(cells.count) decoded cells, encoded \(layout), do not decode: \(error)")
        }
        require(again.cells == cells.cells, "\(cells.count) cells come back different after encoding \(layout)")
    }
    let sectioned = AggregateLogCodec.encode(cells, layout: .byTenant)
    // A few tenants are enough: each costs a pass over the row.
    for tenant in Set(cells.cells.keys.map(\.tenant)).sorted().prefix(4) {
        var read: [AggregateCellKey: UsageAggregate] = [:]
        do {
            try sectioned.withUnsafeBytes { raw in
                Result { () throws(LedgerError) in
                    try AggregateLogCodec.decode(raw, tenant: tenant) { key, aggregate in read[key] = aggregate }
                }
            }.get()
        } catch {
            finding("the cells of tenant '\(tenant)' do not decode: \(error)")
        }
        require(read == cells.cells.filter { $0.key.tenant == tenant }, "reading tenant '\(tenant)' alone gives other cells")
    }
}
