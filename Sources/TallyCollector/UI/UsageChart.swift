import TallyCore

/// A bar chart as inline SVG, drawn on the server: one slot per day of a month or hour of a
/// day, each bar's height in whole pixels scaled exactly (integers) from its quantity, a y axis
/// marked at zero, half the peak and the peak, x labels every few slots, and every bar titled
/// with its figure (a browser shows it on hover) and, when given, a link. No script.
struct UsageChart {
    struct Bar {
        var slot: Int
        var quantity: Quantity
        /// What the bar is, for its title: `2026-03-04`, `2026-03-04 10:00`.
        var label: String
        var link: String?
    }

    /// What the chart shows, for screen readers: `api_calls per day`.
    var title: String
    var slots: Int
    /// The x label of a slot, or nil to leave it unlabelled.
    var slotLabel: (Int) -> String?
    var bars: [Bar]
    /// The metric's unit (see ``HumanFormat/quantity(_:unit:)``).
    var unit: String?

    static let plotHeight: Int128 = 120
    static let left = 72
    static let top = 10

    func svg() -> String {
        let h = PageLayout.h
        let slotWidth = slots > 24 ? 22 : 28
        let width = Self.left + slots * slotWidth + 10
        let baseline = Self.top + Int(Self.plotHeight)
        let peak = bars.map(\.quantity.nanos).max() ?? 0
        var out = """
            <svg class="chart" xmlns="http://www.w3.org/2000/svg" width="\(width)" height="\(baseline + 24)" \
            viewBox="0 0 \(width) \(baseline + 24)" role="img" aria-label="\(h(title))"><title>\(h(title))</title>
            """
        // The y axis: zero, half the peak and the peak, with grid lines.
        for (fraction, y) in [(Int128(0), baseline), (1, Self.top + Int(Self.plotHeight) / 2), (2, Self.top)] {
            out += "<line x1=\"\(Self.left - 4)\" y1=\"\(y)\" x2=\"\(width - 6)\" y2=\"\(y)\"/>"
            let value = Quantity(nanos: peak * fraction / 2)
            out += "<text x=\"\(Self.left - 8)\" y=\"\(y + 3)\" text-anchor=\"end\">\(h(HumanFormat.quantity(value, unit: unit)))</text>"
        }
        for bar in bars where bar.slot >= 0 && bar.slot < slots {
            var height = peak > 0 ? Int(bar.quantity.nanos * Self.plotHeight / peak) : 0
            if height == 0 && bar.quantity.nanos > 0 { height = 1 }  // a small figure stays visible
            let x = Self.left + bar.slot * slotWidth + 2
            var rect = "<rect class=\"bar\" x=\"\(x)\" y=\"\(baseline - height)\" width=\"\(slotWidth - 4)\" height=\"\(height)\">"
            rect += "<title>\(h(bar.label)): \(h(HumanFormat.quantity(bar.quantity, unit: unit)))</title></rect>"
            if let link = bar.link { rect = "<a href=\"\(h(link))\">\(rect)</a>" }
            out += rect
        }
        for slot in 0..<slots {
            guard let label = slotLabel(slot) else { continue }
            let x = Self.left + slot * slotWidth + slotWidth / 2
            out += "<text x=\"\(x)\" y=\"\(baseline + 16)\" text-anchor=\"middle\">\(h(label))</text>"
        }
        out += "</svg>\n"
        return out
    }
}
