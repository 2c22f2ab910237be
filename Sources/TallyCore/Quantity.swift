/// An exact decimal quantity: a whole number of nano-units (10⁻⁹) held in a signed 128-bit integer.
///
/// Quantities never pass through binary floating point. Every spelling of one number (`1`, `1.0`,
/// `"1"`, `1e0`, `10E-1`) parses to the same value, and `description` gives its one canonical text.
/// Arithmetic is checked: an overflow is a thrown ``ArithmeticOverflow``, never a wrap or a trap.
public struct Quantity: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// Decimal places kept: a quantity is a multiple of 10⁻⁹.
    public static let scale = 9
    /// Nano-units in one whole unit.
    public static let nanosPerUnit: Int128 = 1_000_000_000

    /// The value in nano-units.
    public let nanos: Int128

    public init(nanos: Int128) { self.nanos = nanos }

    /// A whole number of units.
    public init(_ units: Int64) { self.nanos = Int128(units) * Self.nanosPerUnit }

    public static let zero = Quantity(nanos: 0)

    public static func < (lhs: Quantity, rhs: Quantity) -> Bool { lhs.nanos < rhs.nanos }

    /// The sum, or ``ArithmeticOverflow`` when it leaves the 128-bit range.
    public func adding(_ other: Quantity) throws(ArithmeticOverflow) -> Quantity {
        let (sum, overflow) = nanos.addingReportingOverflow(other.nanos)
        if overflow { throw ArithmeticOverflow(operation: "\(self) + \(other)") }
        return Quantity(nanos: sum)
    }

    /// The difference, or ``ArithmeticOverflow`` when it leaves the 128-bit range.
    public func subtracting(_ other: Quantity) throws(ArithmeticOverflow) -> Quantity {
        let (difference, overflow) = nanos.subtractingReportingOverflow(other.nanos)
        if overflow { throw ArithmeticOverflow(operation: "\(self) - \(other)") }
        return Quantity(nanos: difference)
    }

    /// The canonical text: no exponent, no leading zeros, no trailing fractional zeros, `0` for
    /// zero, a `-` only for negative values. `Quantity(parsing: q.description) == q` always.
    public var description: String {
        let negative = nanos < 0
        let magnitude = nanos.magnitude
        let whole = magnitude / UInt128(Self.nanosPerUnit)
        var fraction = magnitude % UInt128(Self.nanosPerUnit)
        var text = negative ? "-" : ""
        text += String(whole)
        if fraction != 0 {
            var digits = Self.scale
            while fraction % 10 == 0 {
                fraction /= 10
                digits -= 1
            }
            let fractionText = String(fraction)
            text += "." + String(repeating: "0", count: digits - fractionText.count) + fractionText
        }
        return text
    }

    /// `self / divisor` to 9 decimal places (a whole number of nano-units), rounded half-even: a
    /// quotient exactly halfway between two nano-units goes to the even one, symmetrically for
    /// negative values. Zero for a divisor that is not positive (the mean of no events). Exact
    /// integer arithmetic; it cannot overflow, as the quotient's magnitude never exceeds the
    /// dividend's.
    public func dividedRoundingHalfEven(by divisor: Int64) -> Quantity {
        guard divisor > 0 else { return .zero }
        let d = Int128(divisor)
        var quotient = nanos / d
        let remainder = nanos % d  // same sign as nanos
        let twice = remainder.magnitude * 2
        if twice > d.magnitude || (twice == d.magnitude && quotient % 2 != 0) {
            quotient += nanos < 0 ? -1 : 1
        }
        return Quantity(nanos: quotient)
    }

    /// Whether the value is a whole number of units.
    public var isWhole: Bool { nanos % Self.nanosPerUnit == 0 }
}

/// A sum or product left the range of its exact integer representation.
public struct ArithmeticOverflow: Error, Sendable, Hashable, CustomStringConvertible {
    public let operation: String

    public init(operation: String) { self.operation = operation }
    public var description: String { "arithmetic overflow in \(operation)" }
}

/// Why a text is not a quantity.
public enum QuantityError: Error, Sendable, Hashable, CustomStringConvertible {
    case malformed(String)
    case tooPrecise(String)
    case outOfRange(String)

    public var description: String {
        switch self {
        case .malformed(let text): "'\(text)' is not a decimal number"
        case .tooPrecise(let text): "'\(text)' has more than \(Quantity.scale) decimal places"
        case .outOfRange(let text): "'\(text)' is out of range"
        }
    }
}

extension Quantity {
    /// Parses a JSON number or a decimal string: `-? digits (. digits)? ([eE] [+-]? digits)?`.
    /// A leading `+`, leading `.` or trailing `.` is refused, as JSON refuses them.
    public init(parsing text: some StringProtocol) throws(QuantityError) {
        var utf8 = Array(text.utf8)
        self = try utf8.withUnsafeMutableBufferPointer { buffer throws(QuantityError) in
            try Quantity(parsingUTF8: UnsafeBufferPointer(buffer))
        }
    }

    /// Parses the UTF-8 bytes of a decimal number (see ``init(parsing:)``).
    public init(parsingUTF8 bytes: UnsafeBufferPointer<UInt8>) throws(QuantityError) {
        func text() -> String { String(decoding: bytes, as: UTF8.self) }
        var index = 0
        let count = bytes.count
        var negative = false
        if index < count, bytes[index] == UInt8(ascii: "-") {
            negative = true
            index += 1
        }
        var significand: UInt128 = 0
        var significantDigits = 0
        var exponent = 0  // value = significand * 10^exponent
        var sawDigit = false
        var droppedNonZero = false
        // Integer part.
        let integerStart = index
        while index < count, bytes[index] >= 0x30, bytes[index] <= 0x39 {
            let digit = UInt128(bytes[index] - 0x30)
            sawDigit = true
            if significantDigits < 38 {
                if significand != 0 || digit != 0 {
                    significand = significand * 10 + digit
                    significantDigits += 1
                }
            } else {
                exponent += 1
                if digit != 0 { droppedNonZero = true }
            }
            index += 1
        }
        if !sawDigit { throw .malformed(text()) }
        if index - integerStart > 1, bytes[integerStart] == UInt8(ascii: "0") { throw .malformed(text()) }
        if index < count, bytes[index] == UInt8(ascii: ".") {
            index += 1
            var fractionDigits = 0
            while index < count, bytes[index] >= 0x30, bytes[index] <= 0x39 {
                let digit = UInt128(bytes[index] - 0x30)
                if significantDigits < 38 {
                    if significand != 0 || digit != 0 {
                        significantDigits += 1
                    }
                    significand = significand * 10 + digit
                    exponent -= 1
                } else if digit != 0 {
                    droppedNonZero = true
                }
                fractionDigits += 1
                index += 1
            }
            if fractionDigits == 0 { throw .malformed(text()) }
        }
        if index < count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
            index += 1
            var exponentNegative = false
            if index < count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") {
                exponentNegative = bytes[index] == UInt8(ascii: "-")
                index += 1
            }
            var value = 0
            var exponentDigits = 0
            while index < count, bytes[index] >= 0x30, bytes[index] <= 0x39 {
                if value < 100_000 { value = value * 10 + Int(bytes[index] - 0x30) }
                exponentDigits += 1
                index += 1
            }
            if exponentDigits == 0 { throw .malformed(text()) }
            exponent += exponentNegative ? -value : value
        }
        if index != count { throw .malformed(text()) }
        if droppedNonZero { throw .tooPrecise(text()) }
        if significand == 0 {
            self.nanos = 0
            return
        }
        // Drop trailing zeros so that the exponent says the real precision.
        while significand % 10 == 0 {
            significand /= 10
            exponent += 1
        }
        let shift = exponent + Self.scale
        if shift < 0 { throw .tooPrecise(text()) }
        if shift > 38 { throw .outOfRange(text()) }
        var magnitude = significand
        for _ in 0..<shift {
            let (product, overflow) = magnitude.multipliedReportingOverflow(by: 10)
            if overflow { throw .outOfRange(text()) }
            magnitude = product
        }
        if magnitude > UInt128(Int128.max) { throw .outOfRange(text()) }
        self.nanos = negative ? -Int128(magnitude) : Int128(magnitude)
    }
}
