import TallyCore
import Testing

// LateWindow lives in TallyCore (pure); its tests sit here beside the ledger that relies on it.

private let hour: Int64 = 3_600_000_000
private let window = LateWindow()  // grace 72h, limit 35 days, skew 300s, adjust

@Test func eventInOpenPeriodIsOnTime() {
    let now = at("2026-04-13T12:00:00Z")
    #expect(window.classify(at("2026-04-01T00:00:00Z"), now: now) == .onTime(BillingPeriod(containing: now)))
}

@Test func previousPeriodStaysOpenUntilTheLastMicrosecondOfGrace() throws {
    let march = try #require(BillingPeriod("2026-03"))
    let closing = march.end.advanced(by: .seconds(72 * 3600))  // 2026-04-04T00:00:00Z
    let event = at("2026-03-31T23:59:59Z")
    #expect(window.classify(event, now: EventTime(microseconds: closing.microseconds - 1)) == .onTime(march))
    let april = try #require(BillingPeriod("2026-04"))
    #expect(window.classify(event, now: closing) == .adjustment(original: march, billedIn: april))
}

@Test func adjustmentIsBilledInTheEarliestOpenPeriod() throws {
    // On April 2nd March is still in grace, so a late February event goes on March's invoice.
    let now = at("2026-04-02T00:00:00Z")
    let february = try #require(BillingPeriod("2026-02"))
    let march = try #require(BillingPeriod("2026-03"))
    #expect(window.earliestOpenPeriod(now: now) == march)
    #expect(window.classify(at("2026-02-27T10:00:00Z"), now: now) == .adjustment(original: february, billedIn: march))
}

@Test func rejectPolicyMarksLate() throws {
    var rejecting = window
    rejecting.policy = .reject
    let now = at("2026-04-10T00:00:00Z")
    let march = try #require(BillingPeriod("2026-03"))
    #expect(rejecting.classify(at("2026-03-20T00:00:00Z"), now: now) == .late(march))
}

@Test func lateArrivalLimitBoundary() {
    let now = at("2026-04-10T00:00:00Z")
    let limit = now.microseconds - 35 * 24 * hour
    #expect(window.classify(EventTime(microseconds: limit), now: now) != .tooOld)
    #expect(window.classify(EventTime(microseconds: limit - 1), now: now) == .tooOld)
}

@Test func futureSkewBoundary() {
    let now = at("2026-04-10T00:00:00Z")
    let edge = now.advanced(by: .seconds(300))
    #expect(window.classify(edge, now: now) == .onTime(BillingPeriod(containing: now)))
    #expect(window.classify(EventTime(microseconds: edge.microseconds + 1), now: now) == .future)
}

@Test func futureWithinSkewAcrossAMonthEndCountsInTheNextPeriod() throws {
    let now = at("2026-04-30T23:58:00Z")
    let may = try #require(BillingPeriod("2026-05"))
    #expect(window.classify(at("2026-05-01T00:01:00Z"), now: now) == .onTime(may))
}

@Test func yearBoundaryGrace() throws {
    let december = try #require(BillingPeriod("2025-12"))
    let january = try #require(BillingPeriod("2026-01"))
    let event = at("2025-12-31T12:00:00Z")
    #expect(window.classify(event, now: at("2026-01-03T23:59:59Z")) == .onTime(december))
    #expect(window.classify(event, now: at("2026-01-04T00:00:00Z")) == .adjustment(original: december, billedIn: january))
}

@Test func zeroGraceClosesAtPeriodEnd() throws {
    var strict = window
    strict.grace = .zero
    let march = try #require(BillingPeriod("2026-03"))
    let april = try #require(BillingPeriod("2026-04"))
    let event = at("2026-03-31T23:59:59Z")
    #expect(strict.classify(event, now: at("2026-04-01T00:00:00Z")) == .adjustment(original: march, billedIn: april))
}

@Test func tooOldWinsOverLatePolicy() {
    var rejecting = window
    rejecting.policy = .reject
    let now = at("2026-06-10T00:00:00Z")
    #expect(rejecting.classify(at("2026-03-01T00:00:00Z"), now: now) == .tooOld)
}
