import TallyCore
import TallyLedger
import TallyPricing

/// The admin overview as HTML (`GET /ui`): the period's summary, the tenants table (sort links in
/// its headers, a search form, page links), the agents and the reconciliation totals. Plain
/// HTML and inline CSS: it works without JavaScript, loads nothing else, and escapes every
/// string that came from outside (tenant and agent names, the search).
enum AdminOverviewPage {
    static func html(_ overview: AdminOverview, _ request: OverviewRequest) -> String {
        let h = PageLayout.h
        let period = overview.period
        let page = overview.page(request)
        var body = "<nav><span class=\"here\">Overview</span>"
        if period.previous.year >= 1 {
            let previous = PageLayout.overview(period: period.previous, search: request.search, order: request.order)
            body += "<a href=\"\(h(previous))\">← \(period.previous)</a>"
        }
        body += "<span>\(period)</span>"
        if period.next.start <= overview.now {
            body += "<a href=\"\(h(PageLayout.overview(period: period.next, search: request.search, order: request.order)))\">\(period.next) →</a>"
        }
        body += "</nav>\n<h1>Tally — \(period)</h1>\n"
        body +=
            overview.isOpen
            ? "<p class=\"muted\">The period is open: charges are the draft invoices to date.</p>\n"
            : "<p class=\"muted\">The period is closed: charges are priced from the aggregates now; each tenant's page shows its final invoice.</p>\n"
        body += summary(overview)
        body += tenantsSection(overview, request, page)
        body += agentsSection(overview)
        body += reconciliationSection(overview)
        return PageLayout.page(title: "Tally overview \(period)", body: body)
    }

    static func summary(_ overview: AdminOverview) -> String {
        let h = PageLayout.h
        let totals = (try? overview.chargeTotals()) ?? []
        let charges = totals.isEmpty ? "—" : totals.map(HumanFormat.money).joined(separator: " · ")
        var out = "<div class=\"summary\">"
        out += "<div>Tenants<b>\(HumanFormat.count(Int64(overview.rows.count)))</b></div>"
        out += "<div>Charges<b>\(h(charges))</b></div>"
        out += "<div>Events received<b>\(HumanFormat.count(overview.reconciliation.received))</b></div>"
        out += "<div>Agents<b>\(HumanFormat.count(Int64(overview.agents.count)))</b></div>"
        return out + "</div>\n"
    }

    static func tenantsSection(_ overview: AdminOverview, _ request: OverviewRequest, _ page: OverviewPage) -> String {
        let h = PageLayout.h
        let period = overview.period
        var out = "<h2 id=\"tenants\">Tenants</h2>\n<form class=\"search\" method=\"get\" action=\"/ui\">"
        out += "<input type=\"hidden\" name=\"period\" value=\"\(period)\">"
        if request.order != OverviewOrder() {
            out += "<input type=\"hidden\" name=\"sort\" value=\"\(h(request.order.parameter))\">"
            out += "<input type=\"hidden\" name=\"order\" value=\"\(request.order.descending ? "desc" : "asc")\">"
        }
        out += "<input type=\"search\" name=\"q\" value=\"\(h(request.search))\" placeholder=\"Part of a tenant name\" aria-label=\"Search tenants\">"
        out += "<button type=\"submit\">Search</button>"
        if !request.search.isEmpty { out += "<a href=\"\(h(PageLayout.overview(period: period, order: request.order)))\">Show all</a>" }
        out += "</form>\n"
        guard page.total > 0 else {
            let none = request.search.isEmpty ? "No tenant has usage in \(period)." : "No tenant name contains “\(h(request.search))”."
            return out + "<p>\(none)</p>\n"
        }
        let matching = request.search.isEmpty ? "" : " whose name contains “\(h(request.search))”"
        out += "<p>Tenants \(HumanFormat.count(Int64(page.firstIndex + 1)))–\(HumanFormat.count(Int64(page.firstIndex + page.rows.count)))"
        out += " of \(HumanFormat.count(Int64(page.total)))\(matching), page \(page.page) of \(page.pageCount).</p>\n"
        out += "<table class=\"tenants\"><thead><tr>"
        out += header("Tenant", key: .tenant, numeric: false, overview, request)
        for metric in overview.metrics {
            let unit = metric.displayUnit.map { $0 == "bytes" ? "" : " (\($0))" } ?? ""
            out += header(metric.name + unit, key: .metric(metric.name), numeric: true, overview, request)
        }
        out += header("Charges", key: .charges, numeric: true, overview, request)
        out += "</tr></thead><tbody>\n"
        for row in page.rows {
            out += "<tr><td><a href=\"\(h(PageLayout.tenant(row.tenant, period: period)))\">\(h(row.tenant))</a></td>"
            for (index, metric) in overview.metrics.enumerated() {
                out += usageCell(index < row.usage.count ? row.usage[index] : .zero, unit: metric.displayUnit)
            }
            if let charges = row.charges {
                out += "<td class=\"n\">\(h(HumanFormat.money(charges)))</td>"
            } else {
                out += "<td class=\"n warn\" title=\"\(h(row.problem ?? ""))\">not priced</td>"
            }
            out += "</tr>\n"
        }
        out += "</tbody></table>\n"
        return out + pageLinks(overview, request, page)
    }

    /// A column header: a link that sorts by the column (figures first from the largest), or,
    /// for the column sorted by now, turns the order around.
    static func header(_ title: String, key: OverviewOrder.Key, numeric: Bool, _ overview: AdminOverview, _ request: OverviewRequest) -> String {
        let h = PageLayout.h
        let current = request.order.key == key
        let order = current ? OverviewOrder(key: key, descending: !request.order.descending) : OverviewOrder(key: key)
        let link = PageLayout.overview(period: overview.period, search: request.search, order: order)
        let arrow = current ? (request.order.descending ? " ▼" : " ▲") : ""
        let sorted = current ? " aria-sort=\"\(request.order.descending ? "descending" : "ascending")\"" : ""
        return "<th\(numeric ? " class=\"n\"" : "")\(sorted)><a href=\"\(h(link))\">\(h(title))\(arrow)</a></th>"
    }

    /// A figure for people, with the exact one in its title when they differ.
    static func usageCell(_ quantity: Quantity, unit: String?) -> String {
        let shown = HumanFormat.quantity(quantity, unit: unit)
        let exact = unit == "bytes" ? "\(HumanFormat.quantity(quantity, fractionDigits: Quantity.scale)) bytes" : quantity.description
        let title = shown == exact || (unit == nil && quantity.isWhole) ? "" : " title=\"\(PageLayout.h(exact))\""
        return "<td class=\"n\"\(title)>\(PageLayout.h(shown))</td>"
    }

    /// First, previous, a few pages around this one, next, last.
    static func pageLinks(_ overview: AdminOverview, _ request: OverviewRequest, _ page: OverviewPage) -> String {
        guard page.pageCount > 1 else { return "" }
        let h = PageLayout.h
        func link(_ number: Int, _ text: String, rel: String? = nil) -> String {
            let href = PageLayout.overview(period: overview.period, search: request.search, order: request.order, page: number)
            return "<a href=\"\(h(href))\"\(rel.map { " rel=\"\($0)\"" } ?? "")>\(text)</a>"
        }
        var out = "<nav class=\"pages\" aria-label=\"Pages\">"
        if page.page > 1 {
            out += link(1, "« First") + link(page.page - 1, "‹ Previous", rel: "prev")
        }
        let window = max(1, page.page - 3)...min(page.pageCount, page.page + 3)
        for number in window {
            out += number == page.page ? "<span class=\"current\">\(number)</span>" : link(number, String(number))
        }
        if page.page < page.pageCount {
            out += link(page.page + 1, "Next ›", rel: "next") + link(page.pageCount, "Last »")
        }
        return out + "</nav>\n"
    }

    static func agentsSection(_ overview: AdminOverview) -> String {
        let h = PageLayout.h
        var out = "<h2 id=\"agents\">Agents</h2>\n"
        guard !overview.agents.isEmpty else { return out + "<p>No agent has sent a batch yet.</p>\n" }
        out += "<p class=\"muted\">From the batch records the ledger keeps (the dedupe horizon); lag is the time since the last acked batch.</p>\n"
        out += "<table class=\"agents\"><thead><tr><th>Agent</th><th>Last batch</th><th class=\"n\">Lag</th><th class=\"n\">Last sequence</th>"
        out += "<th class=\"n\">Batches acked</th><th class=\"n\">Events acked</th><th class=\"n\">Accepted</th><th class=\"n\">Duplicate</th>"
        out += "<th class=\"n\">Late</th><th class=\"n\">Rejected</th></tr></thead><tbody>\n"
        for agent in overview.agents {
            out += "<tr><td>\(h(agent.agent))</td>"
            if let last = agent.lastBatchAt {
                let lag = (overview.now.microseconds - last.microseconds) / 1_000_000
                out += "<td>\(HumanFormat.time(last))</td><td class=\"n\(lag > 15 * 60 ? " warn" : "")\">\(HumanFormat.duration(seconds: lag))</td>"
            } else {
                out += "<td class=\"muted\">records pruned</td><td class=\"n\">—</td>"
            }
            let events = agent.events
            out += "<td class=\"n\">\(HumanFormat.grouped(String(agent.lastSequence)))</td><td class=\"n\">\(HumanFormat.count(agent.batches))</td>"
            for figure in [events.received, events.accepted, events.duplicate, events.late, events.rejected] {
                out += "<td class=\"n\">\(HumanFormat.count(figure))</td>"
            }
            out += "</tr>\n"
        }
        return out + "</tbody></table>\n"
    }

    static func reconciliationSection(_ overview: AdminOverview) -> String {
        let counts = overview.reconciliation
        var out = "<h2 id=\"reconciliation\">Reconciliation — \(overview.period)</h2>\n"
        out += "<table class=\"reconciliation\"><thead><tr><th class=\"n\">Received</th><th class=\"n\">Accepted</th><th class=\"n\">Duplicate</th>"
        out += "<th class=\"n\">Late</th><th class=\"n\">of which adjusted</th><th class=\"n\">Rejected</th><th>Balances</th></tr></thead><tbody><tr>"
        for figure in [counts.received, counts.accepted, counts.duplicate, counts.late, counts.adjusted, counts.rejected] {
            out += "<td class=\"n\">\(HumanFormat.count(figure))</td>"
        }
        let balances = counts.balances && overview.unbalancedRows == 0
        out += balances ? "<td class=\"ok\">yes</td>" : "<td class=\"warn\">no (\(overview.unbalancedRows) rows)</td>"
        out += "</tr></tbody></table>\n"
        out += "<p class=\"muted\">received = accepted + duplicate + late + rejected, for every agent and tenant of the period "
        out += "(by event time; events without a readable time count in the period they arrived).</p>\n"
        return out
    }
}
