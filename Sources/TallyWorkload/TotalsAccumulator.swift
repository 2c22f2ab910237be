import TallyCore

/// Adds up unique events per tenant, metric and billing period as the workload is generated,
/// in flat arrays indexed by period slot, tenant and metric (no hashing per event).
struct TotalsAccumulator {
    private struct Cell {
        var count = 0
        var nanos: Int128 = 0
        var lateCount = 0
        var lateNanos: Int128 = 0
    }

    private static let cellsPerPeriod = WorkloadCatalog.tenantCount * WorkloadMetric.allCases.count

    private var periods: [BillingPeriod] = []
    private var cells: [Cell] = []
    /// The period the stream clock is in, cached: most events fall into it.
    private var cachedStart: Int64 = 0
    private var cachedEnd: Int64 = 0
    private var cachedSlot = -1

    /// Counts one unique event. Sums cannot overflow: a quantity is below 2³⁰ units (10¹⁸·⁰⁴
    /// nanos) and ``WorkloadConfiguration/maxEvents`` is 10¹², far inside Int128.
    mutating func add(_ draft: EventDraft, late: Bool) {
        let slot = slot(for: draft.timestamp)
        let index = slot * Self.cellsPerPeriod + draft.tenant * WorkloadMetric.allCases.count + draft.metric.rawValue
        let nanos = Int128(draft.thousandths) * 1_000_000
        cells[index].count += 1
        cells[index].nanos += nanos
        if late {
            cells[index].lateCount += 1
            cells[index].lateNanos += nanos
        }
    }

    private mutating func slot(for timestamp: Int64) -> Int {
        if cachedSlot >= 0, timestamp >= cachedStart, timestamp < cachedEnd { return cachedSlot }
        let period = BillingPeriod(containing: EventTime(microseconds: timestamp))
        let slot: Int
        if let existing = periods.firstIndex(of: period) {
            slot = existing
        } else {
            slot = periods.count
            periods.append(period)
            cells.append(contentsOf: repeatElement(Cell(), count: Self.cellsPerPeriod))
        }
        cachedSlot = slot
        cachedStart = period.start.microseconds
        cachedEnd = period.end.microseconds
        return slot
    }

    /// The non-empty rows, sorted by tenant, metric and period.
    var rows: [ExpectedTotals.Row] {
        let order = periods.indices.sorted { periods[$0] < periods[$1] }
        var rows: [ExpectedTotals.Row] = []
        for tenant in 0..<WorkloadCatalog.tenantCount {
            for metric in WorkloadMetric.allCases {
                for slot in order {
                    let cell = cells[slot * Self.cellsPerPeriod + tenant * WorkloadMetric.allCases.count + metric.rawValue]
                    guard cell.count > 0 else { continue }
                    rows.append(
                        ExpectedTotals.Row(
                            tenant: WorkloadCatalog.tenants[tenant], metric: metric.name, period: periods[slot],
                            quantity: Quantity(nanos: cell.nanos), count: cell.count,
                            lateQuantity: Quantity(nanos: cell.lateNanos), lateCount: cell.lateCount))
                }
            }
        }
        return rows
    }
}
