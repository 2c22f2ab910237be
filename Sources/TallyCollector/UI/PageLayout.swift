import TallyCore

/// What every page of the collector's UI shares: the HTML shell with its inline style sheet
/// (no scripts, no external fonts or images), and the links between the pages.
enum PageLayout {
    /// Escapes text and attribute values (`& < > " '`).
    static func h(_ text: String) -> String { InvoiceRendering.html(text) }

    /// A whole page: `title` in the tab, `body` as given (already escaped).
    static func page(title: String, body: String) -> String {
        """
        <!DOCTYPE html><html lang="en"><head><meta charset="utf-8">\
        <meta name="viewport" content="width=device-width, initial-scale=1"><meta name="referrer" content="no-referrer">
        <title>\(h(title))</title><style>\(style)</style></head><body>
        \(body)
        <footer>Tally — figures from the collector's aggregates; times in UTC.</footer>
        </body></html>
        """
    }

    static let style =
        InvoiceRendering.style + """
            nav{display:flex;gap:1em;flex-wrap:wrap;align-items:baseline;margin:.5em 0}nav .here{font-weight:bold}
            a{color:#1f5fbf}th a{color:inherit;text-decoration:none}th a:hover{text-decoration:underline}
            .summary{display:flex;gap:2em;flex-wrap:wrap;margin:1em 0}.summary div{border:1px solid #ddd;border-radius:6px;padding:.5em 1em}
            .summary b{display:block;font-size:140%}.muted{color:#777}.warn{color:#a40000}.ok{color:#17692a}
            form.search{display:flex;gap:.5em;margin:1em 0}form.search input[type=search]{min-width:18em;padding:4px}
            .pages{display:flex;gap:.6em;flex-wrap:wrap;align-items:baseline;margin:1em 0}.pages .current{font-weight:bold}
            svg.chart{background:#fafafa;border:1px solid #eee;max-width:100%;height:auto}svg.chart text{font:10px sans-serif;fill:#555}
            svg.chart rect.bar{fill:#4a7bd0}svg.chart a:hover rect.bar{fill:#2c5aa8}svg.chart line{stroke:#ddd}
            footer{margin-top:3em;color:#888;font-size:85%}h2{margin-top:1.5em}
            """

    // MARK: Links

    /// `/ui` with the overview's parameters; defaults are left out, so the plain link is `/ui`.
    static func overview(period: BillingPeriod?, search: String = "", order: OverviewOrder = OverviewOrder(), page: Int = 1) -> String {
        var query: [(String, String)] = []
        if let period { query.append(("period", period.description)) }
        if !search.isEmpty { query.append(("q", search)) }
        if order != OverviewOrder() {
            query.append(("sort", order.parameter))
            query.append(("order", order.descending ? "desc" : "asc"))
        }
        if page > 1 { query.append(("page", String(page))) }
        return "/ui" + queryString(query)
    }

    /// `/ui/tenants/TENANT` for a period, and a day of its hourly chart.
    static func tenant(_ tenant: String, period: BillingPeriod, day: EventTime? = nil) -> String {
        var query = [("period", period.description)]
        if let day { query.append(("day", CivilTime(epochSeconds: day.seconds).dateText)) }
        return "/ui/tenants/" + percentEncoded(tenant) + queryString(query)
    }

    static func queryString(_ items: [(String, String)]) -> String {
        items.isEmpty ? "" : "?" + items.map { "\(percentEncoded($0.0))=\(percentEncoded($0.1))" }.joined(separator: "&")
    }

    /// Every byte but the unreserved ones (`A-Z a-z 0-9 - . _ ~`) as `%XX`: safe in a path
    /// segment and in a query value, and read back by ``FormQuery`` and the router exactly.
    static func percentEncoded(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
                out.append(Character(Unicode.Scalar(byte)))
            default:
                let hex = Array("0123456789ABCDEF")
                out += "%\(hex[Int(byte >> 4)])\(hex[Int(byte & 0x0F)])"
            }
        }
        return out
    }
}
