public import TallyCore
import TallyLedger
import TallyPricing

/// The usage report of one period as CSV: a row per tenant and metric with the period's usage
/// billed in it, the late usage it bills for earlier periods, and the event count.
public enum UsageReport {
    static func hours(of period: BillingPeriod) -> Range<Int64> { period.start.hourSinceEpoch..<period.end.hourSinceEpoch }

    public static func csv(service: Invoicing, period: BillingPeriod, tenants: [String]) async throws(BillingError) -> String {
        let metrics = service.pricing?.config.metrics ?? []
        guard !metrics.isEmpty else { throw .noPricing }
        let rows = try await service.onLedger(readOnly: true) { store throws(BillingError) -> [[String]] in
            var rows: [[String]] = [
                ["period", "tenant", "metric", "aggregation", "quantity", "events", "late_quantity_billed_here", "late_events_billed_here"]
            ]
            for tenant in tenants {
                for metric in metrics {
                    let totals: PeriodTotals
                    do { totals = try store.periodTotals(tenant: tenant, metric: metric.name, period: period) } catch {
                        throw .reading(error)
                    }
                    var usage = Quantity.zero
                    if case .weightedSum(let per) = metric.aggregation {
                        usage = try AggregatePricing.levelQuantity(
                            store: store, tenant: tenant, metric: metric.name, per: per, hours: Self.hours(of: period),
                            billing: .billedThrough(period))
                    } else if let total = totals.usage {
                        usage = try AggregatePricing.quantity(of: total, metric.aggregation)
                    }
                    var lateQuantity = Quantity.zero
                    var lateEvents: Int64 = 0
                    for adjustment in totals.adjustments {
                        let late: Quantity
                        if case .weightedSum(let per) = metric.aggregation {
                            // What the late events change in the original period's integral.
                            let hours = Self.hours(of: adjustment.original)
                            let billed = try AggregatePricing.levelQuantity(
                                store: store, tenant: tenant, metric: metric.name, per: per, hours: hours, billing: .billedBefore(period))
                            let corrected = try AggregatePricing.levelQuantity(
                                store: store, tenant: tenant, metric: metric.name, per: per, hours: hours, billing: .billedThrough(period))
                            do { late = try corrected.subtracting(billed) } catch {
                                throw .ledger(.quantityOverflow("late usage of \(tenant) \(metric.name): \(error)"))
                            }
                        } else {
                            late = try AggregatePricing.quantity(of: adjustment.aggregate, metric.aggregation)
                        }
                        do {
                            lateQuantity = try lateQuantity.adding(late)
                        } catch {
                            throw .ledger(.quantityOverflow("late usage of \(tenant) \(metric.name): \(error)"))
                        }
                        lateEvents += adjustment.aggregate.count
                    }
                    if totals.usage == nil && totals.adjustments.isEmpty { continue }
                    rows.append([
                        period.description, tenant, metric.name, metric.aggregation.description, usage.description,
                        String(totals.usage?.count ?? 0), lateQuantity.description, String(lateEvents),
                    ])
                }
            }
            return rows
        }
        return rows.map { $0.map { InvoiceRendering.csv($0) }.joined(separator: ",") }.joined(separator: "\r\n") + "\r\n"
    }
}
