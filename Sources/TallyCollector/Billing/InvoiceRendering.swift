import Foundation
import TallyLedger

/// Renders invoices and usage as CSV and as printable HTML (inline CSS, no scripts, no external
/// fonts). Every tenant-supplied string is escaped.
public enum InvoiceRendering {
    /// Escapes `& < > " '` for HTML text and attribute values.
    public static func html(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for character in text {
            switch character {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.append(character)
            }
        }
        return out
    }

    /// One CSV field (RFC 4180): quoted when it holds a comma, quote or line break. A field that
    /// a spreadsheet could run as a formula is prefixed with `'`: one that starts with `=`, `+`,
    /// `-`, `@`, a tab or a carriage return, their fullwidth forms `＝ ＋ － ＠` (which
    /// spreadsheets fold to ASCII), or a space or a no-break space (which they skip before a
    /// formula). A plain number (`-5`, `12.50`) stays as it is.
    public static func csv(_ field: String) -> String {
        var text = field
        if let first = text.unicodeScalars.first, formulaStarters.contains(first), !isPlainNumber(text) { text = "'" + text }
        if text.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) {
            return "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\""
        }
        return text
    }

    /// First characters that make a spreadsheet read a cell as a formula, or skip to one.
    static let formulaStarters: Set<Unicode.Scalar> = [
        "=", "+", "-", "@", "\t", "\r", " ", "\u{00A0}", "\u{FF1D}", "\u{FF0B}", "\u{FF0D}", "\u{FF20}",
    ]

    /// An ASCII decimal: an optional `-`, digits, at most one `.`.
    private static func isPlainNumber(_ text: String) -> Bool {
        var digits = text.utf8[...]
        if digits.first == UInt8(ascii: "-") { digits = digits.dropFirst() }
        var dots = 0
        for byte in digits {
            if byte == UInt8(ascii: ".") { dots += 1 } else if !(UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) { return false }
        }
        return dots <= 1 && digits.contains { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }
    }

    /// The invoice as CSV: one row per line and per tier step, then subtotal, adjustments, total.
    public static func csv(_ view: InvoiceView) -> String {
        let invoice = view.invoice
        var rows = [
            [
                "tenant", "period", "status", "kind", "description", "metric", "property_value", "tier", "quantity", "free_quantity", "unit_price",
                "amount", "adjusts",
            ]
        ]
        for line in invoice.lines {
            rows.append([
                invoice.tenant, invoice.period, view.status.rawValue, line.kind, line.description, line.metric ?? "", line.propertyValue ?? "", "",
                line.quantity, line.freeQuantity, "", line.amount, line.adjusts ?? "",
            ])
            for step in line.steps {
                rows.append([
                    invoice.tenant, invoice.period, view.status.rawValue, "step", line.description, line.metric ?? "", line.propertyValue ?? "",
                    step.tier.map(String.init) ?? "", step.quantity, "", step.unitPrice, step.amount, "",
                ])
            }
        }
        for (name, amount) in [("subtotal", invoice.subtotal), ("adjustments", invoice.adjustments), ("total", invoice.total)] {
            rows.append([invoice.tenant, invoice.period, view.status.rawValue, name, name, "", "", "", "", "", "", amount, ""])
        }
        // The corrections behind the figures (their money is in the lines above): the change
        // in quantity, the reason and who made it.
        for correction in invoice.corrections ?? [] {
            rows.append([
                invoice.tenant, invoice.period, view.status.rawValue, "correction",
                "\(correction.action) of \(correction.fingerprint) at \(correction.eventTime): \(correction.reason) (\(correction.actor), \(correction.key))",
                correction.metric, "", "", correction.quantityDelta, "", "", "", correction.adjusts ?? "",
            ])
        }
        return rows.map { $0.map { csv($0) }.joined(separator: ",") }.joined(separator: "\r\n") + "\r\n"
    }

    static let style = """
        body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em;color:#222}
        table{border-collapse:collapse;width:100%;margin:1em 0}th,td{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left}
        td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}tr.step td{color:#666;font-size:90%}
        tr.total td{font-weight:bold;border-top:2px solid #222}.badge{padding:2px 6px;border:1px solid #888;border-radius:4px}
        @media print{body{margin:0}}
        """

    /// The invoice as a printable HTML page.
    public static func htmlPage(_ view: InvoiceView) -> String {
        let invoice = view.invoice
        return """
            <!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
            <title>Invoice \(html(invoice.tenant)) \(html(invoice.period))</title><style>\(style)</style></head><body>
            \(invoiceSection(view))
            </body></html>
            """
    }

    /// The invoice's heading and table, for a page.
    static func invoiceSection(_ view: InvoiceView) -> String {
        let invoice = view.invoice
        var out = """
            <h1>Invoice — \(html(invoice.tenant)) — \(html(invoice.period))</h1>
            <p><span class="badge">\(view.status.rawValue)</span> \(html(invoice.periodStart)) to \(html(invoice.periodEnd)), \
            \(html(invoice.currency))\(view.sha256.map { ", SHA-256 <code>\(html($0))</code>" } ?? ", final after \(html(view.closesAt))")</p>
            <table><thead><tr><th>Line</th><th>Plan</th><th class="n">Quantity</th><th class="n">Free</th><th class="n">Unit price</th>\
            <th class="n">Amount (\(html(invoice.currency)))</th></tr></thead><tbody>
            """
        for line in invoice.lines {
            out += "<tr><td>\(html(line.description))</td><td>\(html(line.plan))</td><td class=\"n\">\(html(line.quantity))</td>"
            out += "<td class=\"n\">\(html(line.freeQuantity))</td><td></td><td class=\"n\">\(html(line.amount))</td></tr>\n"
            for step in line.steps {
                out += "<tr class=\"step\"><td>\(step.tier.map { "tier \($0)" } ?? "units")</td><td></td>"
                out += "<td class=\"n\">\(html(step.quantity))</td><td></td><td class=\"n\">\(html(step.unitPrice))</td>"
                out += "<td class=\"n\">\(html(step.amount))</td></tr>\n"
            }
        }
        out += "<tr><td colspan=\"5\">Subtotal</td><td class=\"n\">\(html(invoice.subtotal))</td></tr>\n"
        out += "<tr><td colspan=\"5\">Adjustments for earlier periods</td><td class=\"n\">\(html(invoice.adjustments))</td></tr>\n"
        out += "<tr class=\"total\"><td colspan=\"5\">Total</td><td class=\"n\">\(html(invoice.total))</td></tr>\n"
        out += "</tbody></table>"
        if let corrections = invoice.corrections, !corrections.isEmpty {
            out += "<h2>Corrections</h2><p>Included in the lines above; the raw events are kept as they arrived.</p>"
            out +=
                "<table><thead><tr><th>Event</th><th>Metric</th><th>Change</th><th class=\"n\">Quantity</th><th>Reason</th><th>By</th></tr></thead><tbody>\n"
            for correction in corrections {
                let adjusts = correction.adjusts.map { ", adjusts \(html($0))" } ?? ""
                out += "<tr><td><a href=\"\(html(correction.trace))\">\(html(String(correction.fingerprint.prefix(12))))…</a> "
                out += "\(html(correction.eventTime))</td><td>\(html(correction.metric))</td><td>\(html(correction.action))\(adjusts)</td>"
                out +=
                    "<td class=\"n\">\(html(correction.quantityDelta))</td><td>\(html(correction.reason))</td><td>\(html(correction.actor))</td></tr>\n"
            }
            out += "</tbody></table>"
        }
        return out
    }
}
