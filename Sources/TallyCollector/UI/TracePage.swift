import TallyCore

/// `GET /ui/tenants/{tenant}/trace?id=ID` (or `fingerprint=`): the trace of one event for a
/// person — the finance lead answering "was this request billed, and where?" — with a search
/// form, the same answer as `GET /v1/events/trace`, and links to the invoices it names.
enum TracePage {
    static func html(tenant: String, search: String, report: EventTraceReport?) -> String {
        let h = PageLayout.h
        var body = "<nav><a href=\"\(h(PageLayout.tenant(tenant, period: BillingPeriod(containing: EventTime.now()))))\">← \(h(tenant))</a></nav>\n"
        body += "<h1>Trace an event — \(h(tenant))</h1>\n"
        body += """
            <form class="search" method="get" action="\(h(path(tenant)))"><label for="id">Event id</label>\
            <input type="search" id="id" name="id" value="\(h(search))" required>\
            <button type="submit">Trace</button></form>\n
            """
        guard let report else {
            body += "<p class=\"muted\">The id the API server gave the event (\"id\" in its JSON), as in the customer's request logs.</p>"
            return PageLayout.page(title: "Trace — \(tenant)", body: body)
        }
        body += "<p class=\"muted\">Event times searched: \(h(report.searched.from)) to \(h(report.searched.to)).</p>\n"
        if !report.found {
            body += "<p class=\"warn\">\(h(report.summary))</p>"
            return PageLayout.page(title: "Trace — \(tenant)", body: body)
        }
        for event in report.events {
            body += "<h2>\(h(event.metric)) \(h(event.quantity)) at \(h(event.timestamp))</h2>\n"
            body += "<p><b>\(h(event.explanation))</b></p>\n<p>\(h(event.billing))</p>\n<table><tbody>\n"
            body +=
                "<tr><th>Fingerprint</th><td><code>\(h(event.fingerprint))</code> (\(event.canonicalForm == "id" ? "keyed by id" : "keyed by every field"))</td></tr>\n"
            let properties = event.properties.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", ")
            body += "<tr><th>Properties</th><td>\(h(properties.isEmpty ? "none" : properties))</td></tr>\n"
            let first = event.firstArrival
            body +=
                "<tr><th>Received</th><td>\(event.received)× — first from \(h(first.agent)), batch \(first.batch) #\(first.index), \(h(first.receivedAt))</td></tr>\n"
            for copy in event.duplicates {
                body +=
                    "<tr><th>Duplicate</th><td>\(h(copy.agent)), batch \(copy.batch) #\(copy.index), \(h(copy.receivedAt)): not billed</td></tr>\n"
            }
            body += "</tbody></table>\n"
            if !event.invoiceLines.isEmpty {
                body +=
                    "<table><thead><tr><th>Invoice</th><th>Line</th><th>Plan</th><th class=\"n\">Quantity</th><th class=\"n\">Amount</th></tr></thead><tbody>\n"
                for line in event.invoiceLines {
                    let link = "/ui/tenants/\(PageLayout.percentEncoded(tenant))/invoices/\(line.period)?format=html"
                    body += "<tr><td><a href=\"\(h(link))\">\(h(line.period)) (\(h(line.status)))</a></td><td>\(h(line.description))</td>"
                    body +=
                        "<td>\(h(line.plan))</td><td class=\"n\">\(h(line.quantity))</td><td class=\"n\">\(h(line.amount)) \(h(line.currency))</td></tr>\n"
                }
                body += "</tbody></table>\n"
            }
            for correction in event.corrections {
                let change = correction.quantityAfter.map { "amended to \($0)" } ?? "voided"
                body +=
                    "<p>Correction <code>\(h(correction.key))</code>: \(h(change)) by \(h(correction.actor)) at \(h(correction.createdAt)) — \(h(correction.reason))</p>\n"
            }
        }
        if !report.refusals.isEmpty {
            body += "<h2>Refused arrivals</h2>\n<table><thead><tr><th>Reason</th><th>Message</th><th>From</th></tr></thead><tbody>\n"
            for refusal in report.refusals {
                let arrival = refusal.arrival
                body += "<tr><td>\(h(refusal.reason))\(refusal.field.map { " (\(h($0)))" } ?? "")</td><td>\(h(refusal.message))</td>"
                body += "<td>\(h(arrival.agent)), batch \(arrival.batch) #\(arrival.index), \(h(arrival.receivedAt))</td></tr>\n"
            }
            body += "</tbody></table>\n"
        }
        return PageLayout.page(title: "Trace — \(tenant)", body: body)
    }

    static func path(_ tenant: String) -> String { "/ui/tenants/" + PageLayout.percentEncoded(tenant) + "/trace" }
}
