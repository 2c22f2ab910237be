public import TallyCore
public import TallyPricing

/// Numbers as the pages show them to people: thousands separators, bytes in KB/MB/GB, money
/// with its currency, durations in the largest units that fit. Exact integer arithmetic only:
/// a shown figure is rounded (half up, once, here) from the exact value, which the pages keep
/// beside it (a `title`) whenever the two differ.
public enum HumanFormat {
    /// `1234567` → `1,234,567`; a leading `-` is kept.
    public static func grouped(_ digits: String) -> String {
        var body = Substring(digits)
        var sign = ""
        if body.first == "-" {
            sign = "-"
            body = body.dropFirst()
        }
        var out = ""
        for (index, character) in body.enumerated() {
            if index > 0 && (body.count - index) % 3 == 0 { out.append(",") }
            out.append(character)
        }
        return sign + out
    }

    /// A quantity with thousands separators and at most `fractionDigits` decimals (rounded half
    /// up; trailing zeros dropped): `1234567.891` → `1,234,567.89`.
    public static func quantity(_ quantity: Quantity, fractionDigits: Int = 2) -> String {
        decimal(quantity.nanos, scale: Quantity.scale, fractionDigits: fractionDigits, keepZeros: false)
    }

    /// Bytes in decimal (SI) units, three significant digits: `512 B`, `1.5 KB`, `12.3 MB`,
    /// `456 GB`, `1.23 TB`.
    public static func bytes(_ quantity: Quantity) -> String {
        let units = ["B", "KB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"]
        let magnitude = quantity.nanos.magnitude
        var unit = 0
        var divisor = UInt128(Quantity.nanosPerUnit)
        while unit + 1 < units.count && magnitude >= divisor * 1000 {
            unit += 1
            divisor *= 1000
        }
        while true {
            // Three significant digits: the most decimals (2, 1, 0) that leave under 1,000 steps.
            for decimals in unit == 0 ? [0] : [2, 1, 0] where rounded(magnitude, divisor: divisor, fractionDigits: decimals) < 1000 {
                return "\(decimal(quantity.nanos, divisor: divisor, fractionDigits: decimals, keepZeros: true)) \(units[unit])"
            }
            // Rounding reached the next unit (999.6 KB is 1.00 MB).
            guard unit + 1 < units.count else {
                return "\(decimal(quantity.nanos, divisor: divisor, fractionDigits: 0, keepZeros: true)) \(units[unit])"
            }
            unit += 1
            divisor *= 1000
        }
    }

    /// A metric's quantity in its unit: bytes as ``bytes(_:)``, any other unit after the number
    /// (`1,200 ms`), none as the bare number.
    public static func quantity(_ quantity: Quantity, unit: String?) -> String {
        switch unit {
        case "bytes": bytes(quantity)
        case let unit? where !unit.isEmpty: "\(self.quantity(quantity)) \(unit)"
        default: self.quantity(quantity)
        }
    }

    /// Money with its currency: `$1,234.56`, `€70.00`, `¥1,235`, `CHF 12.50`, `-$5.00`; the
    /// amount keeps at least the currency's minor units and every exact digit it has.
    public static func money(_ money: Money) -> String {
        var text = money.amountText
        let negative = text.hasPrefix("-")
        if negative { text.removeFirst() }
        let parts = text.split(separator: ".", maxSplits: 1)
        var amount = grouped(String(parts.first ?? "0"))
        if parts.count == 2, let fraction = parts.last { amount += "." + fraction }
        let sign = negative ? "-" : ""
        if let symbol = symbols[money.currency.code] { return sign + symbol + amount }
        return "\(sign)\(money.currency.code) \(amount)"
    }

    /// Currencies whose symbol is unambiguous to the people who read these pages; every other
    /// currency is shown with its ISO code.
    static let symbols = ["USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥"]

    /// A duration in its two largest units: `45 s`, `12 min 5 s`, `3 h 5 min`, `2 d 4 h`.
    public static func duration(seconds: Int64) -> String {
        let total = max(seconds, 0)
        let steps: [(Int64, String)] = [(86_400, "d"), (3_600, "h"), (60, "min"), (1, "s")]
        for (index, (size, name)) in steps.enumerated() where total >= size || size == 1 {
            let first = "\(total / size) \(name)"
            guard index + 1 < steps.count else { return first }
            let (nextSize, nextName) = steps[index + 1]
            let rest = (total % size) / nextSize
            return rest == 0 ? first : "\(first) \(rest) \(nextName)"
        }
        return "0 s"
    }

    /// A count with thousands separators.
    public static func count(_ value: Int64) -> String { grouped(String(value)) }

    /// `2026-03-04 10:15:00 UTC`.
    public static func time(_ time: EventTime) -> String {
        let civil = CivilTime(epochSeconds: time.seconds)
        func two(_ value: Int64) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(civil.year)-\(two(civil.month))-\(two(civil.day)) \(two(civil.hour)):\(two(civil.minute)):\(two(civil.second)) UTC"
    }

    // MARK: Exact decimals

    /// `value / 10^scale` rounded half up to `fractionDigits`, grouped.
    static func decimal(_ value: Int128, scale: Int, fractionDigits: Int, keepZeros: Bool) -> String {
        var divisor: UInt128 = 1
        for _ in 0..<scale { divisor *= 10 }
        return decimal(value, divisor: divisor, fractionDigits: min(fractionDigits, scale), keepZeros: keepZeros)
    }

    /// `value / divisor` rounded half up (away from zero) to `fractionDigits`, grouped; trailing
    /// fractional zeros kept or dropped.
    static func decimal(_ value: Int128, divisor: UInt128, fractionDigits: Int, keepZeros: Bool) -> String {
        var step: UInt128 = 1
        for _ in 0..<fractionDigits { step *= 10 }
        let scaled = rounded(value.magnitude, divisor: divisor, fractionDigits: fractionDigits)
        var integer = String(scaled / step)
        var fraction = String(scaled % step)
        if fractionDigits > 0 {
            fraction = String(repeating: "0", count: fractionDigits - fraction.count) + fraction
            if !keepZeros { while fraction.last == "0" { fraction.removeLast() } }
        } else {
            fraction = ""
        }
        integer = grouped(integer)
        let sign = value < 0 && scaled != 0 ? "-" : ""
        return fraction.isEmpty ? sign + integer : "\(sign)\(integer).\(fraction)"
    }

    /// `magnitude / divisor` in units of 10^-fractionDigits, rounded half up.
    static func rounded(_ magnitude: UInt128, divisor: UInt128, fractionDigits: Int) -> UInt128 {
        var step: UInt128 = 1
        for _ in 0..<fractionDigits { step *= 10 }
        let whole = magnitude / divisor
        let remainder = magnitude % divisor
        return whole * step + (remainder * step + divisor / 2) / divisor
    }
}
