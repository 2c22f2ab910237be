import Testing
@testable import TallyCore

/// SPEC §6's per-event rules as the collector applies them to decoded events (`validate`).
@Suite struct EventRulesTests {
    static let now = EventTime(microseconds: 1_776_081_600_000_000)  // 2026-04-13T12:00:00Z

    static func event(id: String? = nil, tenant: String = "acme", metric: String = "api_calls", quantity: Quantity = Quantity(1)) -> UsageEvent {
        UsageEvent(tenant: tenant, metric: metric, quantity: quantity, timestamp: now, id: id, properties: Properties([]))
    }

    static func rejection(_ event: UsageEvent) -> EventRejection? {
        do throws(EventRejection) {
            try event.validate(now: now)
            return nil
        } catch {
            return error
        }
    }

    /// An empty id is not "no id": the event is rejected; an absent id is fine.
    @Test func anEmptyIdIsRejectedAnAbsentOneIsNot() {
        #expect(Self.rejection(Self.event(id: nil)) == nil)
        let rejection = Self.rejection(Self.event(id: ""))
        #expect(rejection?.reason == .invalidField && rejection?.field == "id")
    }

    @Test func tenantsAreTextMetricsAreNames() {
        #expect(Self.rejection(Self.event(tenant: "café x")) == nil)
        #expect(Self.rejection(Self.event(tenant: "a\u{7}b"))?.reason == .invalidField)
        #expect(Self.rejection(Self.event(tenant: String(repeating: "t", count: 129)))?.reason == .limitExceeded)
        #expect(Self.rejection(Self.event(metric: "api calls"))?.reason == .invalidField)
        #expect(Self.rejection(Self.event(metric: "9lives"))?.reason == .invalidField)
        #expect(Self.rejection(Self.event(metric: "api.calls:v2-x_y")) == nil)
    }

    @Test func quantitiesAreBetweenZeroAndTenToTheFifteen() {
        #expect(Self.rejection(Self.event(quantity: Quantity(nanos: -1)))?.reason == .invalidField)
        #expect(Self.rejection(Self.event(quantity: Quantity(nanos: 1_000_000_000_000_000 * Quantity.nanosPerUnit))) == nil)
        #expect(Self.rejection(Self.event(quantity: Quantity(nanos: 1_000_000_000_000_000 * Quantity.nanosPerUnit + 1)))?.reason == .limitExceeded)
    }
}

/// Hour arithmetic, in one place: the hour that contains a time (rounded down, also before
/// 1970), the first hour at or after it, and the period of an hour.
@Suite struct HourArithmeticTests {
    @Test func hoursRoundDownAndUpAcrossTheEpoch() throws {
        let onTheHour = try EventTime(parsing: "2026-04-13T12:00:00Z")
        let inside = try EventTime(parsing: "2026-04-13T12:00:00.000001Z")
        #expect(inside.hourSinceEpoch == onTheHour.hourSinceEpoch)
        #expect(onTheHour.firstHourAtOrAfter == onTheHour.hourSinceEpoch)
        #expect(inside.firstHourAtOrAfter == onTheHour.hourSinceEpoch + 1)
        #expect(EventTime(startOfHour: onTheHour.hourSinceEpoch) == onTheHour)
        let before1970 = try EventTime(parsing: "1969-12-31T23:59:59Z")
        #expect(before1970.hourSinceEpoch == -1)
        #expect(EventTime(microseconds: 0).hourSinceEpoch == 0)
        #expect(BillingPeriod(containingHour: inside.hourSinceEpoch).description == "2026-04")
    }
}
