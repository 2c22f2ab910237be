public import TallyCore
import TallyLedger
import TallyPricing

/// A tenant's usage page (`/ui/tenants/{tenant}`): for one period, the charges and each metric's
/// total, a daily chart per metric (each day a link to its hours), an hourly chart per metric
/// for one day, and the period's invoice; links to the neighbouring periods and days and back
/// to the overview. Numbers are formatted for people (``HumanFormat``); the invoice table keeps
/// its exact figures. Server-rendered: no scripts, no external fonts.
public enum TenantPage {
    /// One metric's usage: daily over the period, hourly over the chosen day, and the total.
    public struct MetricUsage: Sendable {
        public var metric: String
        public var aggregation: String
        public var unit: String?
        public var total: Quantity
        public var days: [(start: EventTime, quantity: Quantity)]
        public var hours: [(start: EventTime, quantity: Quantity)]
    }

    /// Everything the page shows.
    public struct Content: Sendable {
        public var tenant: String
        public var period: BillingPeriod
        /// The start (00:00 UTC) of the day the hourly charts show.
        public var day: EventTime
        public var now: EventTime
        public var metrics: [MetricUsage]
        public var invoice: InvoiceView
        /// Whether the reader may open the overview (the admin key): then the page links to it.
        public var linksToOverview: Bool
    }

    /// Reads the page of `tenant` for `period` from the aggregates. `day` (a day of the period)
    /// picks the hourly charts' day; by default the latest day with usage. A metric's figures
    /// count the events its filters let through; a unique count's total is its distinct values
    /// billed in the period (its bars count events).
    public static func read(
        service: Invoicing, tenant: String, period: BillingPeriod, day: EventTime?, linksToOverview: Bool
    ) async throws(BillingError) -> Content {
        guard let pricing = service.pricing else { throw .noPricing }
        if let day, !period.contains(day) { throw .badParameter("day", "day \(CivilTime(epochSeconds: day.seconds).dateText) is not in \(period)") }
        let invoice = try await service.invoice(tenant: tenant, period: period)
        var metrics: [MetricUsage] = []
        for metric in pricing.config.metrics {
            let days = try await series(service, tenant, metric, from: period.start, to: period.end, .day)
            var total = try await series(service, tenant, metric, from: period.start, to: period.end, .month).first?.quantity ?? .zero
            if case .uniqueCount(let property) = metric.aggregation {
                let distinct = try await service.onLedger(readOnly: true) { store throws(BillingError) -> Int in
                    do throws(LedgerError) {
                        return try store.distinctValues(
                            tenant: tenant, metric: metric.name, property: property, period: period, billedThrough: period)
                    } catch {
                        throw .ledger(error)
                    }
                }
                total = Quantity(Int64(distinct))
            }
            metrics.append(
                MetricUsage(
                    metric: metric.name, aggregation: metric.aggregation.description, unit: metric.displayUnit, total: total, days: days, hours: []))
        }
        let now = service.clock()
        let latestUsed = metrics.flatMap { $0.days.filter { $0.quantity.nanos > 0 }.map(\.start) }.max()
        let chosen = day ?? latestUsed ?? (period.contains(now) ? startOfDay(now) : period.start)
        for (index, metric) in pricing.config.metrics.enumerated() {
            metrics[index].hours = try await series(service, tenant, metric, from: chosen, to: chosen.advanced(by: .seconds(86_400)), .hour)
        }
        return Content(
            tenant: tenant, period: period, day: chosen, now: now, metrics: metrics, invoice: invoice, linksToOverview: linksToOverview)
    }

    /// One metric's usage per bucket, counting only the events its filters let through (read by
    /// the filter's property when it has one; see ``AggregatePricing/filterProperty(of:)``).
    static func series(
        _ service: Invoicing, _ tenant: String, _ metric: MetricDefinition, from: EventTime, to: EventTime, _ granularity: UsageQuery.Granularity
    ) async throws(BillingError) -> [(start: EventTime, quantity: Quantity)] {
        if case .weightedSum(let per) = metric.aggregation {
            return try await levelBuckets(service, tenant, metric.name, per: per, from: from, to: to, granularity)
        }
        let property = AggregatePricing.filterProperty(of: metric)
        let buckets = try await service.usage(
            UsageQuery(tenant: tenant, metric: metric.name, from: from, to: to, granularity: granularity, groupBy: property))
        var merged: [(start: EventTime, aggregate: UsageAggregate)] = []
        for bucket in buckets {
            if let property, let value = bucket.group, !metric.matches(value.isEmpty ? [:] : [property: value]) { continue }
            if let last = merged.last, last.start == bucket.start {
                var aggregate = last.aggregate
                do { try aggregate.merge(bucket.aggregate) } catch { throw .ledger(error) }
                merged[merged.count - 1].aggregate = aggregate
            } else {
                merged.append((bucket.start, bucket.aggregate))
            }
        }
        var result: [(start: EventTime, quantity: Quantity)] = []
        for bucket in merged { result.append((bucket.start, try AggregatePricing.quantity(of: bucket.aggregate, metric.aggregation))) }
        return result
    }

    /// A weighted sum per bucket: the level's integral over each bucket of `from ..< to`, as
    /// every event known now sets it.
    private static func levelBuckets(
        _ service: Invoicing, _ tenant: String, _ metric: String, per: LevelTimeUnit, from: EventTime, to: EventTime,
        _ granularity: UsageQuery.Granularity
    ) async throws(BillingError) -> [(start: EventTime, quantity: Quantity)] {
        try await service.onLedger(readOnly: true) { store throws(BillingError) -> [(start: EventTime, quantity: Quantity)] in
            var result: [(start: EventTime, quantity: Quantity)] = []
            var start = from.firstHourAtOrAfter
            let end = to.firstHourAtOrAfter
            while start < end {
                let next: Int64
                switch granularity {
                case .hour: next = start + 1
                case .day: next = AggregateGrain.day.bucket(of: start) + 24
                case .month: next = BillingPeriod(containingHour: start).end.hourSinceEpoch
                }
                let bucket = start..<min(next, end)
                let quantity = try AggregatePricing.levelQuantity(
                    store: store, tenant: tenant, metric: metric, per: per, hours: bucket, billing: .billedThrough(.last))
                result.append((EventTime(startOfHour: start), quantity))
                start = bucket.upperBound
            }
            return result
        }
    }

    /// 00:00 UTC of the day that contains `time`.
    static func startOfDay(_ time: EventTime) -> EventTime {
        let civil = CivilTime(epochSeconds: time.seconds)
        return EventTime(seconds: CivilTime(year: civil.year, month: civil.month, day: civil.day).epochSeconds)
    }

    /// The whole page.
    public static func html(_ content: Content) -> String {
        let h = PageLayout.h
        let tenant = content.tenant
        let period = content.period
        let document = content.invoice.invoice
        let currency = Currency(code: document.currency)
        func money(_ text: String) -> String {
            guard let currency, let amount = try? Money(currency: currency, parsing: text) else { return "\(text) \(document.currency)" }
            return HumanFormat.money(amount)
        }
        var body = "<nav>"
        if content.linksToOverview { body += "<a href=\"\(h(PageLayout.overview(period: period)))\">← All tenants</a>" }
        if period.previous.year >= 1 {
            body += "<a href=\"\(h(PageLayout.tenant(tenant, period: period.previous)))\">← \(period.previous)</a>"
        }
        body += "<span class=\"here\">\(period)</span>"
        if period.next.start <= content.now {
            body += "<a href=\"\(h(PageLayout.tenant(tenant, period: period.next)))\">\(period.next) →</a>"
        }
        body += "<a href=\"\(h(TracePage.path(tenant)))\">Trace an event</a>"
        body += "</nav>\n<h1>Usage — \(h(tenant)) — \(period)</h1>\n"
        let status =
            content.invoice.status == .draft
            ? "Draft: charges to date; the invoice becomes final after \(h(content.invoice.closesAt))."
            : "Final invoice\(content.invoice.sha256.map { ", SHA-256 <code>\(h($0))</code>" } ?? "")."
        body += "<p class=\"muted\">\(status) Usage by event time; late events are shown on the day they happened.</p>\n"
        body += "<div class=\"summary\"><div>Charges<b>\(h(money(document.total)))</b></div>"
        for metric in content.metrics {
            body += "<div>\(h(metric.metric))<b>\(h(HumanFormat.quantity(metric.total, unit: metric.unit)))</b></div>"
        }
        body += "</div>\n<h2>Daily usage</h2>\n"
        let days = Int(CivilTime.daysInMonth(year: period.year, month: period.month))
        for metric in content.metrics {
            let chargedTotal = charged(metric.metric, document, currency)
            body += "<h3>\(h(metric.metric)) <small class=\"muted\">(\(h(metric.aggregation)), period total "
            body += "\(h(HumanFormat.quantity(metric.total, unit: metric.unit)))"
            if let chargedTotal { body += ", charged \(h(HumanFormat.money(chargedTotal)))" }
            body += ")</small></h3>\n"
            let bars = metric.days.map { day in
                UsageChart.Bar(
                    slot: Int((day.start.microseconds - period.start.microseconds) / 86_400_000_000), quantity: day.quantity,
                    label: CivilTime(epochSeconds: day.start.seconds).dateText,
                    link: PageLayout.tenant(tenant, period: period, day: day.start) + "#hourly")
            }
            body += UsageChart(
                title: "\(metric.metric) per day of \(period)", slots: days, slotLabel: { $0 == 0 || ($0 + 1) % 5 == 0 ? String($0 + 1) : nil },
                bars: bars, unit: metric.unit
            ).svg()
        }
        let dayText = CivilTime(epochSeconds: content.day.seconds).dateText
        body += "<h2 id=\"hourly\">Hourly usage — \(dayText)</h2>\n<nav>"
        let previousDay = content.day.advanced(by: .seconds(-86_400))
        let nextDay = content.day.advanced(by: .seconds(86_400))
        if period.contains(previousDay) {
            body +=
                "<a href=\"\(h(PageLayout.tenant(tenant, period: period, day: previousDay)))#hourly\">← \(CivilTime(epochSeconds: previousDay.seconds).dateText)</a>"
        }
        body += "<span class=\"here\">\(dayText)</span>"
        if period.contains(nextDay) && nextDay <= content.now {
            body +=
                "<a href=\"\(h(PageLayout.tenant(tenant, period: period, day: nextDay)))#hourly\">\(CivilTime(epochSeconds: nextDay.seconds).dateText) →</a>"
        }
        body += "</nav>\n"
        for metric in content.metrics {
            body += "<h3>\(h(metric.metric))</h3>\n"
            let bars = metric.hours.map { hour in
                let civil = CivilTime(epochSeconds: hour.start.seconds)
                return UsageChart.Bar(
                    slot: Int((hour.start.microseconds - content.day.microseconds) / 3_600_000_000), quantity: hour.quantity,
                    label: "\(civil.dateText) \(civil.hour < 10 ? "0" : "")\(civil.hour):00", link: nil)
            }
            body += UsageChart(
                title: "\(metric.metric) per hour of \(dayText)", slots: 24, slotLabel: { $0 % 3 == 0 ? String($0) : nil }, bars: bars,
                unit: metric.unit
            ).svg()
        }
        let invoiceLink = "/ui/tenants/\(PageLayout.percentEncoded(tenant))/invoices/\(period)"
        body += InvoiceRendering.invoiceSection(content.invoice)
        body += "<p>This invoice as <a href=\"\(h(invoiceLink))?format=csv\">CSV</a>, <a href=\"\(h(invoiceLink))?format=html\">a printable page</a>"
        body += " or <a href=\"\(h(invoiceLink))?format=json\">JSON</a>.</p>\n"
        return PageLayout.page(title: "Usage \(tenant) \(period)", body: body)
    }
}

/// What the invoice's lines of `metric` add up to (usage and adjustment lines); nil when it has
/// none or an amount does not read back.
private func charged(_ metric: String, _ document: InvoiceDocument, _ currency: Currency?) -> Money? {
    guard let currency else { return nil }
    var total: Money?
    for line in document.lines where line.metric == metric {
        do {
            let amount = try Money(currency: currency, parsing: line.amount)
            total = try total?.adding(amount) ?? amount
        } catch {
            return nil
        }
    }
    return total
}

extension CivilTime {
    /// `YYYY-MM-DD`.
    var dateText: String {
        func two(_ value: Int64) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(year)-\(two(month))-\(two(day))"
    }
}
