public import TallyCore

/// An exact amount of one currency: a whole number of 10⁻²¹ currency units in a signed 128-bit
/// integer (range about ±1.7 × 10¹⁷ units).
///
/// Scale 21 is exactly a ``Quantity`` (scale 9) times a ``UnitPrice`` (scale 12), so a quantity
/// times a price is a `Money` with no rounding at all. The only rounding in Tally's pricing is
/// ``roundedForInvoiceLine(times:over:)``: half-even to the currency's minor units, once per
/// invoice line. Arithmetic is checked; an overflow is a thrown ``MoneyError``, never a wrap.
public struct Money: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// Decimal places kept: an amount is a multiple of 10⁻²¹.
    public static let scale = 21
    /// The amount times 10²¹.
    public let scaledAmount: Int128
    public let currency: Currency

    public init(currency: Currency, scaledAmount: Int128) {
        self.currency = currency
        self.scaledAmount = scaledAmount
    }

    /// Zero in `currency`.
    public static func zero(_ currency: Currency) -> Money { Money(currency: currency, scaledAmount: 0) }

    /// Parses a plain decimal (`49`, `49.90`, `0.0000125`; at most 12 decimal places, no exponent).
    public init(currency: Currency, parsing text: String) throws(DecimalTextError) {
        let picos = try ExactDecimalText.parse(text, scale: UnitPrice.scale)
        let (scaled, overflow) = picos.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { throw DecimalTextError(text: text, problem: "is out of range") }
        self.init(currency: currency, scaledAmount: scaled)
    }

    /// The amount in minor units (cents), when it is a whole number of them.
    public var minorUnits: Int128? {
        let step = Self.minorUnitStep(currency)
        return scaledAmount % step == 0 ? scaledAmount / step : nil
    }

    /// Whether the amount is a whole number of the currency's minor units.
    public var isRoundedToMinorUnits: Bool { minorUnits != nil }

    public static func < (lhs: Money, rhs: Money) -> Bool {
        (lhs.currency.code, lhs.scaledAmount) < (rhs.currency.code, rhs.scaledAmount)
    }

    /// The sum; both amounts must be in the same currency.
    public func adding(_ other: Money) throws(MoneyError) -> Money {
        guard currency == other.currency else { throw .currencyMismatch(currency, other.currency) }
        let (sum, overflow) = scaledAmount.addingReportingOverflow(other.scaledAmount)
        if overflow { throw .overflow("\(self) + \(other)") }
        return Money(currency: currency, scaledAmount: sum)
    }

    /// The difference; both amounts must be in the same currency.
    public func subtracting(_ other: Money) throws(MoneyError) -> Money {
        guard currency == other.currency else { throw .currencyMismatch(currency, other.currency) }
        let (difference, overflow) = scaledAmount.subtractingReportingOverflow(other.scaledAmount)
        if overflow { throw .overflow("\(self) - \(other)") }
        return Money(currency: currency, scaledAmount: difference)
    }

    /// `quantity × price`, exactly: scale 9 times scale 12 is scale 21.
    public static func product(_ quantity: Quantity, _ price: UnitPrice, in currency: Currency) throws(MoneyError) -> Money {
        let (product, overflow) = quantity.nanos.multipliedReportingOverflow(by: price.picos)
        if overflow { throw .overflow("\(quantity) × \(price) \(currency)") }
        return Money(currency: currency, scaledAmount: product)
    }

    /// `count × price` for a whole count (packages), exactly.
    public static func product(count: Int128, _ price: UnitPrice, in currency: Currency) throws(MoneyError) -> Money {
        let (perUnit, overflowA) = price.picos.multipliedReportingOverflow(by: 1_000_000_000)
        let (product, overflowB) = perUnit.multipliedReportingOverflow(by: count)
        if overflowA || overflowB { throw .overflow("\(count) × \(price) \(currency)") }
        return Money(currency: currency, scaledAmount: product)
    }

    /// THE rounding rule of Tally's invoices, applied in this one place:
    ///
    /// An invoice line's exact amount — the sum of its exact tier amounts, or a flat fee or
    /// minimum times the fraction `numerator / denominator` of the period it covers — is rounded
    /// **once**, **half-even** (banker's rounding: a tie goes to the even minor unit, so
    /// 0.125 → 0.12 and 0.135 → 0.14), to the currency's minor units (USD 2, JPY 0, KWD 3).
    /// Tier amounts inside a line stay exact; totals are sums of rounded lines and are never
    /// rounded again. Negative amounts round symmetrically.
    public func roundedForInvoiceLine(times numerator: Int128 = 1, over denominator: Int128 = 1) throws(MoneyError) -> Money {
        precondition(denominator > 0, "a proration fraction has a positive denominator")
        let step = Self.minorUnitStep(currency)
        let (value, overflowA) = scaledAmount.multipliedReportingOverflow(by: numerator)
        let (divisor, overflowB) = step.multipliedReportingOverflow(by: denominator)
        if overflowA || overflowB { throw .overflow("\(self) × \(numerator) / \(denominator)") }
        var quotient = value / divisor
        let remainder = value % divisor  // same sign as value
        let twiceRemainder = remainder.magnitude * 2
        if twiceRemainder > divisor.magnitude || (twiceRemainder == divisor.magnitude && quotient % 2 != 0) {
            quotient += value < 0 ? -1 : 1
        }
        let (rounded, overflowC) = quotient.multipliedReportingOverflow(by: step)
        if overflowC { throw .overflow("\(self) × \(numerator) / \(denominator)") }
        return Money(currency: currency, scaledAmount: rounded)
    }

    /// 10^(21 - minor units): the scaled size of one minor unit.
    static func minorUnitStep(_ currency: Currency) -> Int128 {
        var step: Int128 = 1
        for _ in 0..<(scale - currency.minorUnits) { step *= 10 }
        return step
    }

    /// The amount as decimal text with at least the currency's minor-unit digits (`70.00`,
    /// `1235`, `0.0000125`), with no currency code.
    public var amountText: String {
        ExactDecimalText.format(scaledAmount, scale: Self.scale, minimumFractionDigits: currency.minorUnits)
    }

    /// `70.00 USD`.
    public var description: String { "\(amountText) \(currency.code)" }
}

/// A price per unit (or per package): an exact decimal with at most 12 decimal places, so that
/// prices such as 0.0000125 are kept exactly. It carries no currency: the plan's currency applies.
public struct UnitPrice: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// Decimal places kept.
    public static let scale = 12
    /// The price times 10¹².
    public let picos: Int128

    public init(picos: Int128) { self.picos = picos }

    /// Parses a plain decimal (`0.001`, `5`, `0.0000125`): at most 12 decimal places, no exponent.
    public init(parsing text: String) throws(DecimalTextError) {
        self.picos = try ExactDecimalText.parse(text, scale: Self.scale)
    }

    public static func < (lhs: UnitPrice, rhs: UnitPrice) -> Bool { lhs.picos < rhs.picos }

    public var description: String { ExactDecimalText.format(picos, scale: Self.scale, minimumFractionDigits: 0) }
}

/// Why an amount of money could not be computed.
public enum MoneyError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The exact result leaves the 128-bit range; the text names the operation.
    case overflow(String)
    /// Amounts in two currencies were combined.
    case currencyMismatch(Currency, Currency)

    public var description: String {
        switch self {
        case .overflow(let operation): "amount out of range (overflow) in \(operation)"
        case .currencyMismatch(let a, let b): "cannot combine amounts in \(a) and \(b)"
        }
    }
}

/// Why a text is not a plain decimal of the expected precision.
public struct DecimalTextError: Error, Sendable, Hashable, CustomStringConvertible {
    public let text: String
    public let problem: String
    public var description: String { "'\(text)' \(problem)" }
}

/// Plain decimal text <-> scaled integers. No binary floating point is ever involved.
enum ExactDecimalText {
    /// Parses `-?digits(.digits)?` into the value times 10^scale.
    static func parse(_ text: String, scale: Int) throws(DecimalTextError) -> Int128 {
        func fail(_ problem: String) -> DecimalTextError { DecimalTextError(text: text, problem: problem) }
        var bytes = Substring(text).utf8[...]
        var negative = false
        if bytes.first == UInt8(ascii: "-") {
            negative = true
            bytes = bytes.dropFirst()
        }
        var value: Int128 = 0
        var sawDigit = false
        var fractionDigits = 0
        var inFraction = false
        for byte in bytes {
            if byte == UInt8(ascii: ".") {
                if inFraction || !sawDigit { throw fail("is not a plain decimal number (e.g. 0.001)") }
                inFraction = true
                continue
            }
            guard byte >= 0x30, byte <= 0x39 else { throw fail("is not a plain decimal number (e.g. 0.001)") }
            if inFraction {
                fractionDigits += 1
                if fractionDigits > scale {
                    if byte != 0x30 { throw fail("has more than \(scale) decimal places") }
                    continue
                }
            }
            sawDigit = true
            let (times10, overflowA) = value.multipliedReportingOverflow(by: 10)
            let (next, overflowB) = times10.addingReportingOverflow(Int128(byte - 0x30))
            if overflowA || overflowB { throw fail("is out of range") }
            value = next
        }
        if !sawDigit || (inFraction && fractionDigits == 0) { throw fail("is not a plain decimal number (e.g. 0.001)") }
        for _ in min(fractionDigits, scale)..<scale {
            let (times10, overflow) = value.multipliedReportingOverflow(by: 10)
            if overflow { throw fail("is out of range") }
            value = times10
        }
        return negative ? -value : value
    }

    /// Formats value / 10^scale with at least `minimumFractionDigits` and no other trailing zeros.
    ///
    /// Digit by digit into one buffer: every amount of every invoice and charges answer goes
    /// through here (a tenth of a charges call's CPU went to `String(UInt128)` and the string
    /// concatenations before). 128-bit division is done in software, so the digits come from
    /// 64-bit division once the rest fits in 64 bits, as every real amount does.
    static func format(_ value: Int128, scale: Int, minimumFractionDigits: Int) -> String {
        // The digits of |value|, least significant first, padded with zeros to one more than
        // `scale`: the whole part has a digit at least.
        var reversed: [UInt8] = []
        reversed.reserveCapacity(max(40, scale + 1))
        var magnitude = value.magnitude
        while magnitude > UInt128(UInt64.max) {
            let (quotient, remainder) = magnitude.quotientAndRemainder(dividingBy: 10)
            reversed.append(0x30 + UInt8(remainder))
            magnitude = quotient
        }
        var rest = UInt64(magnitude)
        repeat {
            reversed.append(0x30 + UInt8(rest % 10))
            rest /= 10
        } while rest > 0
        while reversed.count <= scale { reversed.append(0x30) }
        // Trailing zeros of the fraction beyond the minimum: the first of `reversed`.
        var dropped = 0
        while dropped < scale - minimumFractionDigits, reversed[dropped] == 0x30 { dropped += 1 }
        var text: [UInt8] = []
        text.reserveCapacity(reversed.count + 2)
        if value < 0 { text.append(UInt8(ascii: "-")) }
        for index in stride(from: reversed.count - 1, through: scale, by: -1) { text.append(reversed[index]) }
        if dropped < scale {
            text.append(UInt8(ascii: "."))
            for index in stride(from: scale - 1, through: dropped, by: -1) { text.append(reversed[index]) }
        }
        return String(decoding: text, as: UTF8.self)
    }
}
