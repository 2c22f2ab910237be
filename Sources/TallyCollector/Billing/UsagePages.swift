public import TallyCore
import TallyLedger
import TallyPricing

/// A tenant's usage page (`/ui/tenants/{tenant}`): per metric, the period's daily usage as a
/// server-rendered SVG bar chart, then the draft invoice. No scripts, no external fonts.
public enum UsagePage {
    /// Daily usage of one metric: (day start, quantity by the metric's aggregation).
    public struct MetricDays: Sendable {
        public var metric: String
        public var aggregation: String
        public var days: [(start: EventTime, quantity: Quantity)]
        public var total: Quantity
    }

    /// Reads the daily usage of every priced metric for `period`, from the aggregates.
    public static func metricDays(service: Invoicing, tenant: String, period: BillingPeriod) async throws(BillingError) -> [MetricDays] {
        guard let pricing = service.pricing else { throw .noPricing }
        var result: [MetricDays] = []
        for metric in pricing.config.metrics {
            let daily = try await service.usage(
                UsageQuery(tenant: tenant, metric: metric.name, from: period.start, to: period.end, granularity: .day))
            let monthly = try await service.usage(
                UsageQuery(tenant: tenant, metric: metric.name, from: period.start, to: period.end, granularity: .month))
            let days = daily.map { ($0.start, AggregatePricing.quantity(of: $0.aggregate, metric.aggregation)) }
            let total = monthly.first.map { AggregatePricing.quantity(of: $0.aggregate, metric.aggregation) } ?? .zero
            result.append(MetricDays(metric: metric.name, aggregation: metric.aggregation.description, days: days, total: total))
        }
        return result
    }

    /// The whole page.
    public static func html(tenant: String, period: BillingPeriod, metrics: [MetricDays], invoice: InvoiceView?) -> String {
        let h = InvoiceRendering.html
        var out = """
            <!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Usage \(h(tenant)) \(period)</title>
            <style>\(InvoiceRendering.style) svg{background:#fafafa;border:1px solid #eee}</style></head><body>
            <h1>Usage — \(h(tenant)) — \(period)</h1>
            <p>From the hourly aggregates; late events are shown on the day they happened.</p>
            """
        for metric in metrics {
            out += "<h2>\(h(metric.metric)) <small>(\(h(metric.aggregation)), period total \(h(metric.total.description)))</small></h2>\n"
            out += chart(period: period, days: metric.days)
        }
        if let invoice { out += InvoiceRendering.invoiceSection(invoice) }
        out += "</body></html>"
        return out
    }

    /// A bar per day of the period; heights are integer pixels scaled exactly from the quantities.
    static func chart(period: BillingPeriod, days: [(start: EventTime, quantity: Quantity)]) -> String {
        let dayCount = Int((period.end.microseconds - period.start.microseconds) / 86_400_000_000)
        let barWidth = 20
        let height: Int128 = 120
        let width = dayCount * barWidth + 40
        let peak = days.map(\.quantity.nanos).max() ?? 0
        var out = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(width)\" height=\"150\" role=\"img\" aria-label=\"daily usage\">"
        for (start, quantity) in days {
            let index = Int((start.microseconds - period.start.microseconds) / 86_400_000_000)
            let barHeight = peak > 0 ? Int(quantity.nanos * height / peak) : 0
            let x = 20 + index * barWidth
            out += "<rect x=\"\(x)\" y=\"\(130 - barHeight)\" width=\"\(barWidth - 4)\" height=\"\(barHeight)\" fill=\"#4a7bd0\">"
            out += "<title>\(CivilTime(epochSeconds: start.seconds).dateText): \(quantity)</title></rect>"
        }
        for day in stride(from: 0, to: dayCount, by: 5) {
            out += "<text x=\"\(20 + day * barWidth)\" y=\"145\" font-size=\"10\">\(day + 1)</text>"
        }
        out += "<text x=\"2\" y=\"12\" font-size=\"10\">max \(Quantity(nanos: peak))</text></svg>\n"
        return out
    }
}

extension CivilTime {
    /// `YYYY-MM-DD`.
    var dateText: String {
        func two(_ value: Int64) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(year)-\(two(month))-\(two(day))"
    }
}

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
                    let usage = totals.usage.map { AggregatePricing.quantity(of: $0, metric.aggregation) } ?? .zero
                    var lateQuantity = Quantity.zero
                    var lateEvents: Int64 = 0
                    for adjustment in totals.adjustments {
                        do {
                            lateQuantity = try lateQuantity.adding(AggregatePricing.quantity(of: adjustment.aggregate, metric.aggregation))
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
