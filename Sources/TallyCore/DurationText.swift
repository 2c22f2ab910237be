/// Durations as operators write them in configs and flags: `250ms`, `30s`, `5m`, `72h`, `35d`,
/// or a combination such as `1h30m`. Whole units only; no binary floating point.
public enum DurationText {
    /// Why a text is not a duration.
    public struct ParseError: Error, Sendable, Hashable, CustomStringConvertible {
        public let text: String
        public var description: String { "'\(text)' is not a duration (use e.g. 250ms, 30s, 5m, 72h, 35d)" }
    }

    public static func parse(_ text: String) throws(ParseError) -> Duration {
        var total = Duration.zero
        var number: Int64?
        var unit = ""
        var sawAny = false
        func flush() throws(ParseError) {
            guard let value = number else { throw ParseError(text: text) }
            switch unit {
            case "ms": total += .milliseconds(value)
            case "s": total += .seconds(value)
            case "m": total += .seconds(value * 60)
            case "h": total += .seconds(value * 3600)
            case "d": total += .seconds(value * 86_400)
            default: throw ParseError(text: text)
            }
            number = nil
            unit = ""
            sawAny = true
        }
        for character in text {
            if let digit = character.wholeNumberValue, character.isASCII {
                if !unit.isEmpty { try flush() }
                let (product, overflow) = (number ?? 0).multipliedReportingOverflow(by: 10)
                guard !overflow, product <= 1_000_000_000 else { throw ParseError(text: text) }
                number = product + Int64(digit)
            } else if character.isLetter, number != nil {
                unit.append(character)
            } else {
                throw ParseError(text: text)
            }
        }
        if number != nil || !unit.isEmpty { try flush() }
        guard sawAny else { throw ParseError(text: text) }
        return total
    }

    /// The shortest text that parses back to `duration` (whole milliseconds).
    public static func format(_ duration: Duration) -> String {
        var ms = duration.microseconds / 1000
        if ms == 0 { return "0s" }
        var out = ""
        for (size, name) in [(Int64(86_400_000), "d"), (3_600_000, "h"), (60_000, "m"), (1000, "s"), (1, "ms")] where ms >= size {
            out += "\(ms / size)\(name)"
            ms %= size
        }
        return out
    }
}
