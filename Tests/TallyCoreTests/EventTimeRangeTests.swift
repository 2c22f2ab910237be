import Testing
@testable import TallyCore

/// Event times are bounded (`EventTime.acceptedRange`), so that every period derived from an
/// accepted event reads back: a year-0000 event once left a reconciliation row `0000-06` that
/// broke every reader.
@Suite struct EventTimeRangeTests {
    /// A "now" after everything, so that only the range check can refuse.
    static let now = EventTime(microseconds: .max)

    static func event(at timestamp: String) -> String {
        #"{"tenant":"acme","metric":"api_calls","quantity":1,"timestamp":"\#(timestamp)"}"#
    }

    @Test(arguments: [
        "0000-06-01T00:00:00Z", "0000-12-31T23:59:59.999999Z", "0001-01-01T00:00:00+00:01", "9999-12-31T23:59:59-00:01",
        "9999-12-31T23:59:59-23:59",
    ])
    func timesOutsideTheRangeAreRefusedWithAFieldAndAReason(_ timestamp: String) {
        let rejection = decodeOne(Self.event(at: timestamp), now: Self.now).error
        #expect(rejection?.reason == .invalidField)
        #expect(rejection?.field == "timestamp")
        #expect(rejection?.message.contains("accepted range") == true, "\(String(describing: rejection))")
    }

    @Test(arguments: ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z", "1969-12-31T23:59:59.5Z", "2026-04-13T12:00:00Z"])
    func timesInsideTheRangeAreAccepted(_ timestamp: String) {
        #expect(decodeOne(Self.event(at: timestamp), now: Self.now).value != nil)
    }

    /// Any 64-bit time can arrive from the wire: it prints, and is refused with a reason.
    @Test func extremeTimesPrintAndAreRefused() {
        let extremes = [EventTime(microseconds: .min), EventTime(microseconds: .min + 1), EventTime(microseconds: .max)]
        for time in extremes {
            #expect(!time.description.isEmpty)
            let event = UsageEvent(tenant: "acme", metric: "api_calls", quantity: Quantity(1), timestamp: time, id: nil, properties: Properties([]))
            do throws(EventRejection) {
                try event.validate(now: Self.now)
                Issue.record("\(time.microseconds) was accepted")
            } catch {
                #expect(error.reason == .invalidField && error.field == "timestamp")
            }
        }
        #expect(EventTime(microseconds: .min).description.hasSuffix(".224192Z"))
        #expect(EventTime(microseconds: -1).description == "1969-12-31T23:59:59.999999Z")
    }

    @Test func theRangeIsExactlyTheNameablePeriods() throws {
        let range = EventTime.acceptedRange
        #expect(range.lowerBound.description == "0001-01-01T00:00:00Z")
        #expect(range.upperBound.description == "9999-12-31T23:59:59.999999Z")
        #expect(BillingPeriod(containing: range.lowerBound).description == "0001-01")
        #expect(BillingPeriod(containing: range.upperBound).description == "9999-12")
    }

    /// Whatever time an event carried, the period that explains it prints and parses back.
    @Test func thePeriodExplainingAnEventAlwaysReadsBack() throws {
        let arrival = try EventTime(parsing: "2026-04-13T12:00:00Z")
        let range = EventTime.acceptedRange
        let outside: [EventTime?] = [
            nil, EventTime(microseconds: .min), EventTime(microseconds: .max), range.lowerBound.advanced(by: .microseconds(-1)),
            range.upperBound.advanced(by: .microseconds(1)), try EventTime(parsing: "0000-06-01T00:00:00Z"),
        ]
        for time in outside {
            let period = BillingPeriod(explaining: time, arrivedAt: arrival)
            #expect(period == BillingPeriod(containing: arrival), "\(String(describing: time))")
        }
        for time in [range.lowerBound, range.upperBound, try EventTime(parsing: "1969-12-31T23:59:59.5Z"), arrival] {
            let period = BillingPeriod(explaining: time, arrivedAt: arrival)
            #expect(period.contains(time))
            #expect(BillingPeriod(period.description) == period, "\(period)")
        }
    }
}
