#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An instant in UTC with microsecond precision: microseconds since 1970-01-01T00:00:00Z.
///
/// Parsed from RFC 3339 text (any offset, normalised to UTC) and printed back in one canonical
/// form, so the same instant always has the same bytes in a fingerprint.
public struct EventTime: Sendable, Hashable, Comparable, CustomStringConvertible {
    public let microseconds: Int64

    public init(microseconds: Int64) { self.microseconds = microseconds }

    public init(seconds: Int64) { self.microseconds = seconds * 1_000_000 }

    public static func < (lhs: EventTime, rhs: EventTime) -> Bool { lhs.microseconds < rhs.microseconds }

    /// Seconds since the epoch, rounded towards negative infinity.
    public var seconds: Int64 { microseconds.floorDiv(1_000_000) }

    /// This instant moved by a signed number of microseconds (saturating at the range's ends).
    public func advanced(by delta: Duration) -> EventTime {
        let (sum, overflow) = microseconds.addingReportingOverflow(delta.microseconds)
        if overflow { return EventTime(microseconds: delta.microseconds < 0 ? .min : .max) }
        return EventTime(microseconds: sum)
    }

    /// RFC 3339 in UTC: `2026-04-13T12:00:00Z`, with six fractional digits when not whole.
    public var description: String {
        let civil = CivilTime(epochSeconds: seconds)
        // The remainder, in 0..<1_000_000; `microseconds - seconds * 1_000_000` would overflow
        // near Int64.min, and any 64-bit value can arrive from the wire.
        var micros = microseconds % 1_000_000
        if micros < 0 { micros += 1_000_000 }
        var text = civil.description
        if micros != 0 {
            let digits = String(micros)
            text += "." + String(repeating: "0", count: 6 - digits.count) + digits
        }
        return text + "Z"
    }

    /// The event times Tally accepts: from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z,
    /// both included — exactly the instants of the billing periods `0001-01` to `9999-12`, so
    /// every period derived from an accepted event prints and parses back as `YYYY-MM`. An event
    /// outside it is refused with reason `invalid_field` (field `timestamp`) by the agent and by
    /// the collector alike. (Old events are refused long before that as `too_old`; the range
    /// only keeps every stored period readable.)
    public static let acceptedRange: ClosedRange<EventTime> =
        EventTime(microseconds: -62_135_596_800_000_000)...EventTime(microseconds: 253_402_300_800_000_000 - 1)

    /// The current wall-clock time (off by ``ClockFault``'s offset when a test asks for it).
    public static func now() -> EventTime {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        let now = Int64(spec.tv_sec) * 1_000_000 + Int64(spec.tv_nsec) / 1_000
        guard let fault = ClockFault.process else { return EventTime(microseconds: now) }
        return EventTime(microseconds: now + fault.offset())
    }
}

extension Duration {
    /// Whole microseconds in this duration, truncated towards zero.
    public var microseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000 + attoseconds / 1_000_000_000_000
    }

    /// Whole nanoseconds in this duration, truncated towards zero (for latency metrics).
    public var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}

extension Int64 {
    /// Division rounding towards negative infinity.
    @inlinable func floorDiv(_ divisor: Int64) -> Int64 {
        let quotient = self / divisor
        return (self % divisor != 0 && (self < 0) != (divisor < 0)) ? quotient - 1 : quotient
    }
}

/// Why a text is not an RFC 3339 timestamp.
public struct TimestampError: Error, Sendable, Hashable, CustomStringConvertible {
    public let text: String
    public let problem: String
    public var description: String { "'\(text)' is not an RFC 3339 timestamp: \(problem)" }
}

/// A proleptic Gregorian date and time of day in UTC, to the second.
public struct CivilTime: Sendable, Hashable, CustomStringConvertible {
    public var year: Int64
    public var month: Int64
    public var day: Int64
    public var hour: Int64
    public var minute: Int64
    public var second: Int64

    public init(year: Int64, month: Int64, day: Int64, hour: Int64 = 0, minute: Int64 = 0, second: Int64 = 0) {
        self.year = year
        self.month = month
        self.day = day
        self.hour = hour
        self.minute = minute
        self.second = second
    }

    /// Days since 1970-01-01 of a civil date (H. Hinnant's `days_from_civil`).
    public static func days(year: Int64, month: Int64, day: Int64) -> Int64 {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mp = (month + 9) % 12
        let doy = (153 * mp + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    public init(epochSeconds: Int64) {
        let days = epochSeconds.floorDiv(86_400)
        let secondOfDay = epochSeconds - days * 86_400
        // H. Hinnant's `civil_from_days`.
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = doy - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        self.init(
            year: yoe + era * 400 + (month <= 2 ? 1 : 0), month: month, day: day,
            hour: secondOfDay / 3600, minute: secondOfDay % 3600 / 60, second: secondOfDay % 60)
    }

    public var epochSeconds: Int64 {
        Self.days(year: year, month: month, day: day) * 86_400 + hour * 3600 + minute * 60 + second
    }

    public static func daysInMonth(year: Int64, month: Int64) -> Int64 {
        switch month {
        case 2: (year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)) ? 29 : 28
        case 4, 6, 9, 11: 30
        default: 31
        }
    }

    public var description: String {
        func pad(_ value: Int64, _ width: Int) -> String {
            let digits = String(value)
            return String(repeating: "0", count: max(0, width - digits.count)) + digits
        }
        return "\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2))T\(pad(hour, 2)):\(pad(minute, 2)):\(pad(second, 2))"
    }
}

extension EventTime {
    /// Parses RFC 3339: `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`. The fraction may have up to
    /// nine digits, but digits past the sixth must be zero: Tally keeps microseconds exactly and
    /// refuses to round a caller's timestamp silently.
    public init(parsing text: some StringProtocol) throws(TimestampError) {
        var utf8 = Array(text.utf8)
        self = try utf8.withUnsafeMutableBufferPointer { buffer throws(TimestampError) in
            try EventTime(parsingUTF8: UnsafeBufferPointer(buffer))
        }
    }

    public init(parsingUTF8 b: UnsafeBufferPointer<UInt8>) throws(TimestampError) {
        func fail(_ problem: String) -> TimestampError {
            TimestampError(text: String(decoding: b, as: UTF8.self), problem: problem)
        }
        func number(_ start: Int, _ length: Int) -> Int64? {
            guard start + length <= b.count else { return nil }
            var value: Int64 = 0
            for i in start..<(start + length) {
                let c = b[i]
                guard c >= 0x30, c <= 0x39 else { return nil }
                value = value * 10 + Int64(c - 0x30)
            }
            return value
        }
        // A scalar, not a Character: `Character.asciiValue` showed up in the agent's profile.
        func at(_ i: Int, _ c: Unicode.Scalar) -> Bool {
            i < b.count && b[i] == UInt8(ascii: c)
        }
        // 19 characters are a date and a time without a zone: named as such below.
        guard b.count >= 19 else { throw fail("too short; expected e.g. 2026-04-13T12:00:00Z") }
        guard let year = number(0, 4), at(4, "-"), let month = number(5, 2), at(7, "-"),
            let day = number(8, 2)
        else { throw fail("the date must be YYYY-MM-DD") }
        guard at(10, "T") || at(10, "t") || at(10, " ") else { throw fail("expected 'T' after the date") }
        guard let hour = number(11, 2), at(13, ":"), let minute = number(14, 2), at(16, ":"),
            let second = number(17, 2)
        else { throw fail("the time must be HH:MM:SS") }
        guard month >= 1, month <= 12 else { throw fail("month \(month) is out of range") }
        guard day >= 1, day <= CivilTime.daysInMonth(year: year, month: month) else {
            throw fail("day \(day) is out of range")
        }
        guard hour <= 23, minute <= 59, second <= 59 else { throw fail("time of day is out of range") }
        var index = 19
        var micros: Int64 = 0
        if at(index, ".") {
            index += 1
            var digits = 0
            while index < b.count, b[index] >= 0x30, b[index] <= 0x39 {
                let digit = Int64(b[index] - 0x30)
                if digits < 6 {
                    micros = micros * 10 + digit
                } else if digit != 0 {
                    throw fail("sub-microsecond precision is not kept")
                }
                digits += 1
                index += 1
            }
            guard digits >= 1, digits <= 9 else { throw fail("the fraction must have 1 to 9 digits") }
            var scale = digits
            while scale < 6 {
                micros *= 10
                scale += 1
            }
        }
        var offsetSeconds: Int64 = 0
        if at(index, "Z") || at(index, "z") {
            index += 1
        } else if at(index, "+") || at(index, "-") {
            let sign: Int64 = at(index, "-") ? -1 : 1
            guard let offsetHour = number(index + 1, 2), at(index + 3, ":"),
                let offsetMinute = number(index + 4, 2), offsetHour <= 23, offsetMinute <= 59
            else { throw fail("the offset must be Z or ±HH:MM") }
            offsetSeconds = sign * (offsetHour * 3600 + offsetMinute * 60)
            index += 6
        } else {
            throw fail("a time zone (Z or ±HH:MM) is required")
        }
        guard index == b.count else { throw fail("unexpected characters after the time zone") }
        let civil = CivilTime(year: year, month: month, day: day, hour: hour, minute: minute, second: second)
        self.init(microseconds: (civil.epochSeconds - offsetSeconds) * 1_000_000 + micros)
    }
}

// MARK: - Hours

extension EventTime {
    public static let microsecondsPerHour: Int64 = 3_600_000_000

    /// The hour that contains this time, counted in whole hours since the epoch (rounded down,
    /// also before 1970). Aggregates are keyed by it.
    public var hourSinceEpoch: Int64 {
        let quotient = microseconds / Self.microsecondsPerHour
        return microseconds % Self.microsecondsPerHour < 0 ? quotient - 1 : quotient
    }

    /// The first hour that starts at or after this time.
    public var firstHourAtOrAfter: Int64 {
        let hour = hourSinceEpoch
        return hour * Self.microsecondsPerHour == microseconds ? hour : hour + 1
    }

    /// The start of hour `hour` (since the epoch).
    public init(startOfHour hour: Int64) {
        self.init(microseconds: hour * Self.microsecondsPerHour)
    }
}
