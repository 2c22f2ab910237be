public import TallyCore
import TallyLedger
import TallyPricing

/// The usage report of one period as CSV: a row per tenant and metric with the period's usage
/// billed in it, the late usage it bills for earlier periods, and the event count.
public enum UsageReport {
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
                    if let total = totals.usage { usage = try AggregatePricing.quantity(of: total, metric.aggregation) }
                    var lateQuantity = Quantity.zero
                    var lateEvents: Int64 = 0
                    for adjustment in totals.adjustments {
                        let late = try AggregatePricing.quantity(of: adjustment.aggregate, metric.aggregation)
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
