/// A group-by dimension derived from each event's quantity rather than from a property: an
/// event falls `below` when `quantity × multiplier < lower`, `above` when
/// `quantity × multiplier > upper`, and `within` otherwise (a missing bound never holds). The
/// products and bounds are exact integers (quantity nano-units times `multiplier`), compared with
/// no rounding, so an event's band is decided once, exactly, when it is aggregated.
///
/// The pricing config uses it for a percentage price with a per-event minimum or maximum: its
/// cells say how many events were clamped to each bound and the sum and count of the others,
/// which is everything the price needs (see `PRICING.md`). Its name is its dimension, starting
/// with `#` — a character no configured property name can contain — and spelling out its
/// numbers, so that the same band is the same dimension in every process and every version.
public struct QuantityBand: Sendable, Hashable, CustomStringConvertible {
    public static let below = "below"
    public static let within = "within"
    public static let above = "above"

    public let multiplier: Int128
    public let lower: Int128?
    public let upper: Int128?

    public init(multiplier: Int128, lower: Int128?, upper: Int128?) {
        self.multiplier = multiplier
        self.lower = lower
        self.upper = upper
    }

    /// The dimension name: `#band(multiplier,lower,upper)`, `-` for a missing bound.
    public var dimension: String {
        "#band(\(multiplier),\(lower.map { String($0) } ?? "-"),\(upper.map { String($0) } ?? "-"))"
    }

    public var description: String { dimension }

    /// Whether a dimension name is a band's (rather than a property's).
    public static func isBand(_ dimension: String) -> Bool { dimension.utf8.first == UInt8(ascii: "#") }

    /// The band a dimension name spells; nil for any other name.
    public init?(dimension: String) {
        guard dimension.hasPrefix("#band("), dimension.hasSuffix(")") else { return nil }
        let inner = dimension.dropFirst(6).dropLast()
        let parts = inner.split(separator: ",", omittingEmptySubsequences: false)
        guard parts.count == 3, let multiplier = Int128(parts[0]) else { return nil }
        func bound(_ text: Substring) -> Int128?? { text == "-" ? .some(nil) : Int128(text).map { .some($0) } }
        guard let lower = bound(parts[1]), let upper = bound(parts[2]) else { return nil }
        self.init(multiplier: multiplier, lower: lower, upper: upper)
        guard self.dimension == dimension else { return nil }
    }

    /// The band of an event with this quantity. A product beyond the 128-bit range lies beyond
    /// every bound on its side.
    public func value(of quantity: Quantity) -> String {
        let (product, overflow) = quantity.nanos.multipliedReportingOverflow(by: multiplier)
        if overflow {
            let positive = (quantity.nanos < 0) == (multiplier < 0)
            if positive { return upper == nil ? Self.within : Self.above }
            return lower == nil ? Self.within : Self.below
        }
        if let lower, product < lower { return Self.below }
        if let upper, product > upper { return Self.above }
        return Self.within
    }
}
