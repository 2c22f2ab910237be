public import TallyCore

/// The invoice's canonical JSON written member by member, in the canonical order (each object's
/// keys sorted by their UTF-8 bytes, nil members left out), into one string.
///
/// Why not `JSONWriter.encode`, as before: every charges read encodes the month-to-date
/// invoice, and going through `Encodable` — a node per value, containers keyed by strings, each
/// object's keys sorted at run time — was about a fifth of such a read's CPU (perf of a collector
/// polled by one client). The bytes are the same (`InvoiceJSONTests` compares them with
/// `JSONWriter.encode` on documents with and without every optional member, escapes and
/// non-ASCII text): a final invoice's SHA-256 is taken over them.
extension InvoiceDocument {
    /// The canonical JSON, as `JSONWriter.encode(self)` writes it.
    public func canonicalText() -> JSONText {
        var out = ""
        out.reserveCapacity(512 + lines.count * 360 + (corrections?.count ?? 0) * 400)
        var object = Members(opening: &out)
        object.string("adjustments", adjustments, to: &out)
        if let corrections {
            object.key("corrections", to: &out)
            Members.array(corrections, to: &out) { correction, out in correction.write(to: &out) }
        }
        object.string("currency", currency, to: &out)
        object.key("lines", to: &out)
        Members.array(lines, to: &out) { line, out in line.write(to: &out) }
        object.string("period", period, to: &out)
        object.string("periodEnd", periodEnd, to: &out)
        object.string("periodStart", periodStart, to: &out)
        object.key("segments", to: &out)
        Members.array(segments, to: &out) { segment, out in segment.write(to: &out) }
        object.string("subtotal", subtotal, to: &out)
        object.string("tenant", tenant, to: &out)
        object.string("total", total, to: &out)
        out += "}"
        return JSONText(assembled: out)
    }
}

extension InvoiceDocument.Line {
    fileprivate func write(to out: inout String) {
        var object = Members(opening: &out)
        if let adjusts { object.string("adjusts", adjusts, to: &out) }
        object.string("amount", amount, to: &out)
        object.string("description", description, to: &out)
        object.string("exactAmount", exactAmount, to: &out)
        object.string("freeQuantity", freeQuantity, to: &out)
        object.string("kind", kind, to: &out)
        if let metric { object.string("metric", metric, to: &out) }
        object.string("plan", plan, to: &out)
        if let propertyValue { object.string("propertyValue", propertyValue, to: &out) }
        object.string("quantity", quantity, to: &out)
        object.string("segmentEnd", segmentEnd, to: &out)
        object.string("segmentStart", segmentStart, to: &out)
        object.key("steps", to: &out)
        Members.array(steps, to: &out) { step, out in step.write(to: &out) }
        out += "}"
    }
}

extension InvoiceDocument.Step {
    fileprivate func write(to out: inout String) {
        var object = Members(opening: &out)
        object.string("amount", amount, to: &out)
        object.string("quantity", quantity, to: &out)
        if let tier {
            object.key("tier", to: &out)
            out += String(tier)
        }
        object.string("unitPrice", unitPrice, to: &out)
        out += "}"
    }
}

extension InvoiceDocument.Segment {
    fileprivate func write(to out: inout String) {
        var object = Members(opening: &out)
        object.string("end", end, to: &out)
        object.string("plan", plan, to: &out)
        object.string("start", start, to: &out)
        out += "}"
    }
}

extension InvoiceDocument.Correction {
    fileprivate func write(to out: inout String) {
        var object = Members(opening: &out)
        object.string("action", action, to: &out)
        object.string("actor", actor, to: &out)
        if let adjusts { object.string("adjusts", adjusts, to: &out) }
        object.string("createdAt", createdAt, to: &out)
        object.string("eventTime", eventTime, to: &out)
        object.string("fingerprint", fingerprint, to: &out)
        object.string("key", key, to: &out)
        object.string("metric", metric, to: &out)
        object.string("quantityDelta", quantityDelta, to: &out)
        object.string("reason", reason, to: &out)
        object.string("trace", trace, to: &out)
        out += "}"
    }
}

extension InvoiceView {
    /// The view's canonical JSON, as `JSONWriter.encode(self)` writes it: the invoice's JSON
    /// embedded byte for byte.
    public func canonicalText() -> String {
        var out = ""
        out.reserveCapacity(invoiceJSON.text.utf8.count + 200)
        var object = Members(opening: &out)
        object.string("closesAt", closesAt, to: &out)
        if let finalizedAt { object.string("finalizedAt", finalizedAt, to: &out) }
        object.key("invoice", to: &out)
        out += invoiceJSON.text
        if let sha256 { object.string("sha256", sha256, to: &out) }
        object.string("status", status.rawValue, to: &out)
        out += "}"
        return out
    }
}

/// One object's members, written in the order the caller gives them (which must be the
/// canonical one): the opening brace, the separators, the quoted keys and string values; the
/// caller writes the closing brace.
private struct Members {
    private var first = true

    init(opening out: inout String) { out += "{" }

    mutating func key(_ name: String, to out: inout String) {
        if first { first = false } else { out += "," }
        JSONWriter.appendQuoted(name, to: &out)
        out += ":"
    }

    mutating func string(_ name: String, _ value: String, to out: inout String) {
        key(name, to: &out)
        JSONWriter.appendQuoted(value, to: &out)
    }

    static func array<Element>(_ elements: [Element], to out: inout String, _ write: (Element, inout String) -> Void) {
        out += "["
        for (index, element) in elements.enumerated() {
            if index > 0 { out += "," }
            write(element, &out)
        }
        out += "]"
    }
}
