import Testing
@testable import TallyCore

@Suite struct EventTimeTests {
    @Test(arguments: [
        ("2026-04-13T12:00:00Z", 1_776_081_600_000_000 as Int64),
        ("2026-04-13T14:00:00+02:00", 1_776_081_600_000_000),
        ("2026-04-13T07:30:00-04:30", 1_776_081_600_000_000),
        ("2026-04-13t12:00:00z", 1_776_081_600_000_000),
        ("2026-04-13T12:00:00.5Z", 1_776_081_600_500_000),
        ("2026-04-13T12:00:00.000001Z", 1_776_081_600_000_001),
        ("2026-04-13T12:00:00.123456000Z", 1_776_081_600_123_456),
        ("1970-01-01T00:00:00Z", 0),
        ("1969-12-31T23:59:59.5Z", -500_000),
        ("2024-02-29T00:00:00Z", 1_709_164_800_000_000),
    ])
    func parses(_ text: String, _ micros: Int64) throws {
        #expect(try EventTime(parsing: text).microseconds == micros)
    }

    @Test(arguments: [
        "2026-04-13", "2026-04-13T12:00:00", "2026-13-01T00:00:00Z", "2026-02-29T00:00:00Z", "2026-04-31T00:00:00Z",
        "2026-04-13T24:00:00Z", "2026-04-13T12:60:00Z", "2026-04-13T12:00:00.Z", "2026-04-13T12:00:00.0000001Z",
        "2026-04-13T12:00:00+2:00", "2026-04-13T12:00:00Zjunk", "1776081600", "", "2026-04-13T12:00:00.1234567890Z",
    ])
    func refuses(_ text: String) {
        #expect(throws: TimestampError.self) { try EventTime(parsing: text) }
    }

    @Test func formatsCanonicallyAndRoundTrips() throws {
        #expect(EventTime(microseconds: 1_776_081_600_000_000).description == "2026-04-13T12:00:00Z")
        #expect(EventTime(microseconds: 1_776_081_600_000_010).description == "2026-04-13T12:00:00.000010Z")
        #expect(EventTime(microseconds: -500_000).description == "1969-12-31T23:59:59.500000Z")
        var micros: Int64 = -86_400_000_000 * 366
        while micros < 86_400_000_000 * 365 * 80 {
            let time = EventTime(microseconds: micros)
            #expect(try EventTime(parsing: time.description) == time)
            micros += 86_400_000_000 * 17 + 3_600_000_123
        }
    }

    @Test func civilDaysAreContinuousAcrossFourCenturies() {
        var expected = CivilTime.days(year: 1900, month: 1, day: 1)
        for year in Int64(1900)...2300 {
            for month in Int64(1)...12 {
                for day in 1...CivilTime.daysInMonth(year: year, month: month) {
                    let days = CivilTime.days(year: year, month: month, day: day)
                    if days != expected {
                        Issue.record("\(year)-\(month)-\(day) is day \(days), expected \(expected)")
                        return
                    }
                    let back = CivilTime(epochSeconds: days * 86_400)
                    if back.year != year || back.month != month || back.day != day {
                        Issue.record("day \(days) maps back to \(back)")
                        return
                    }
                    expected += 1
                }
            }
        }
    }
}

@Suite struct BillingPeriodTests {
    @Test func monthsAndBoundaries() throws {
        let t = try EventTime(parsing: "2026-04-30T23:59:59.999999Z")
        let april = BillingPeriod(containing: t)
        #expect(april.description == "2026-04")
        #expect(april.contains(t))
        #expect(april.end == (try EventTime(parsing: "2026-05-01T00:00:00Z")))
        #expect(!april.contains(april.end))
        #expect(BillingPeriod("2026-12")?.next.description == "2027-01")
        #expect(BillingPeriod("2026-01")?.previous.description == "2025-12")
        #expect(BillingPeriod("2026-13") == nil)
        #expect(BillingPeriod("26-01") == nil)
    }
}

@Suite struct CRC32CTests {
    @Test func knownValues() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(CRC32C.checksum([UInt8]()) == 0)
        // RFC 3720 B.4: 32 bytes of zeros and of 0xFF.
        #expect(CRC32C.checksum([UInt8](repeating: 0, count: 32)) == 0x8A91_36AA)
        #expect(CRC32C.checksum([UInt8](repeating: 0xFF, count: 32)) == 0x62A8_AB43)
        #expect(CRC32C.checksum(Array(0...31 as ClosedRange<UInt8>)) == 0x46DD_794E)
    }

    @Test func incrementalEqualsWhole() {
        let bytes = (0..<1000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        for split in [0, 1, 7, 8, 9, 500, 999, 1000] {
            var crc = CRC32C()
            crc.update(Array(bytes[..<split]))
            crc.update(Array(bytes[split...]))
            #expect(crc.value == CRC32C.checksum(bytes))
        }
    }

    /// The CPU's instruction (where it is used) against the table form, over every length up to
    /// 64 at every alignment, and in pieces: the same value each time.
    @Test func theInstructionAgreesWithTheTables() {
        var random = SplitMix64(seed: 42)
        let bytes = (0..<200).map { _ in UInt8(truncatingIfNeeded: random.next()) }
        bytes.withUnsafeBytes { raw in
            for offset in 0..<8 {
                for length in 0...64 {
                    let slice = UnsafeRawBufferPointer(rebasing: raw[offset..<(offset + length)])
                    var fast = CRC32C()
                    fast.update(slice)
                    var tables = CRC32C()
                    tables.updateWithTables(slice)
                    #expect(fast.value == tables.value, "offset \(offset), length \(length)")
                    var pieces = CRC32C()
                    pieces.update(UnsafeRawBufferPointer(rebasing: slice[..<(length / 3)]))
                    pieces.update(UnsafeRawBufferPointer(rebasing: slice[(length / 3)...]))
                    #expect(pieces.value == tables.value)
                }
            }
        }
        #if arch(x86_64)
        // Every x86-64 machine this project runs on has SSE 4.2: the fast path is really taken.
        #expect(CRC32C.usesHardware)
        #endif
    }
}

@Suite struct DurationTextTests {
    @Test(arguments: [
        ("250ms", Duration.milliseconds(250)), ("30s", .seconds(30)), ("5m", .seconds(300)), ("72h", .seconds(259_200)),
        ("35d", .seconds(3_024_000)), ("1h30m", .seconds(5400)), ("0s", .zero),
    ])
    func parses(_ text: String, _ expected: Duration) throws {
        #expect(try DurationText.parse(text) == expected)
        #expect(try DurationText.parse(DurationText.format(expected)) == expected)
    }

    @Test(arguments: ["", "5", "h", "5x", "-5s", "1.5h", "5 s", "99999999999999s"])
    func refuses(_ text: String) {
        #expect(throws: DurationText.ParseError.self) { try DurationText.parse(text) }
    }
}
