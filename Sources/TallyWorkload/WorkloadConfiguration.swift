public import TallyCore

/// What to generate: a seed and a line count, plus the knobs the CLI exposes. Two workloads with
/// equal configurations produce the same bytes.
public struct WorkloadConfiguration: Sendable, Hashable {
    /// The seed of the workload's own random generator.
    public var seed: UInt64
    /// Lines to produce (events, retries and invalid lines together).
    public var events: Int
    /// The stream clock's first instant (default 2026-04-01T00:00:00Z).
    public var start: EventTime
    /// Mean events per simulated second; gaps between events are uniform in
    /// `0...(2,000,000 / rate)` microseconds.
    public var rate: Int
    /// Lines per million that repeat a recent earlier event exactly (a client retry).
    public var retriesPerMillion: Int
    /// Lines per million whose timestamp is 1 to 48 hours behind the stream clock.
    public var latePerMillion: Int
    /// Lines per million that every decoder must reject.
    public var invalidPerMillion: Int

    /// 2026-04-01T00:00:00Z.
    public static let defaultStart = EventTime(seconds: CivilTime(year: 2026, month: 4, day: 1).epochSeconds)
    /// The largest line count accepted; it keeps every sum far inside ``Quantity``'s range.
    public static let maxEvents = 1_000_000_000_000
    /// The largest rate accepted: one event per microsecond on average.
    public static let maxRate = 1_000_000

    public init(
        seed: UInt64, events: Int, start: EventTime = WorkloadConfiguration.defaultStart, rate: Int = 100,
        retriesPerMillion: Int = 10_000, latePerMillion: Int = 1_000, invalidPerMillion: Int = 100
    ) {
        self.seed = seed
        self.events = events
        self.start = start
        self.rate = rate
        self.retriesPerMillion = retriesPerMillion
        self.latePerMillion = latePerMillion
        self.invalidPerMillion = invalidPerMillion
    }

    /// Checks every field; the first problem is thrown.
    public func validate() throws(WorkloadConfigurationError) {
        guard (0...Self.maxEvents).contains(events) else { throw .eventCount(events) }
        guard (1...Self.maxRate).contains(rate) else { throw .rate(rate) }
        guard retriesPerMillion >= 0, latePerMillion >= 0, invalidPerMillion >= 0,
            retriesPerMillion + latePerMillion + invalidPerMillion <= 1_000_000
        else { throw .shares(retries: retriesPerMillion, late: latePerMillion, invalid: invalidPerMillion) }
        // Far from the ends of time, so that late offsets and a long run stay inside years 1000-9000.
        let earliest = EventTime(seconds: CivilTime(year: 1000, month: 1, day: 1).epochSeconds)
        let latest = EventTime(seconds: CivilTime(year: 9000, month: 1, day: 1).epochSeconds)
        guard start >= earliest, start < latest else { throw .start(start) }
    }
}

/// Why a ``WorkloadConfiguration`` cannot be generated.
public enum WorkloadConfigurationError: Error, Sendable, Hashable, CustomStringConvertible {
    case eventCount(Int)
    case rate(Int)
    case shares(retries: Int, late: Int, invalid: Int)
    case start(EventTime)

    public var description: String {
        switch self {
        case .eventCount(let count):
            "the event count must be from 0 to \(WorkloadConfiguration.maxEvents), not \(count)"
        case .rate(let rate):
            "the rate must be from 1 to \(WorkloadConfiguration.maxRate) events per second, not \(rate)"
        case .shares(let retries, let late, let invalid):
            "retry, late and invalid shares must be non-negative and add up to at most 1,000,000 per million "
                + "(got \(retries), \(late), \(invalid))"
        case .start(let start):
            "the start time must be between the years 1000 and 9000, not \(start)"
        }
    }
}
