public import TallyCore

/// One line of the reference workload.
public struct WorkloadLine: Sendable, Hashable {
    /// What a line is, and so how it must be billed.
    public enum Kind: Sendable, Hashable {
        /// A new valid event, on time.
        case event
        /// A new valid event whose timestamp is 1 to 48 hours behind the stream clock.
        case late
        /// Exactly the line of a recent earlier event again: billed zero more times.
        case retry
        /// A line every decoder must reject.
        case invalid(InvalidLineKind)
    }

    public let kind: Kind
    /// The line's bytes, without the newline.
    public let bytes: [UInt8]
    /// The event, for valid lines (retries included); its `jsonLine` is `bytes`.
    public let event: UsageEvent?

    public var text: String { String(decoding: bytes, as: UTF8.self) }
}

/// The deterministic reference workload of the brief: NDJSON usage events from 1,000 tenants
/// with Zipf (s = 1) traffic over four metrics, timestamps moving forward with jitter, and a
/// known share of client retries, late events and invalid lines. The same configuration gives
/// the same bytes on every platform; nothing reads the system clock or the system generator.
///
/// Use it as a `Sequence` of ``WorkloadLine``s (simple, allocates per line), or call
/// ``appendNextLine(to:)`` to write lines straight into a byte buffer (the fast path of
/// `tallyctl gen` and the benchmarks). Either way ``expectedTotals`` tells, at any point, the
/// exact totals of what has been generated so far.
public struct ReferenceWorkload: Sequence, IteratorProtocol, Sendable {
    /// How many recent events a retry may repeat.
    public static let retryWindow = 1_024

    public let configuration: WorkloadConfiguration
    private var random: WorkloadRandom
    private var renderer = LineRenderer()
    private var clock: Int64
    private let maxGap: Int64
    private var produced = 0
    private var window: [EventDraft] = []
    private var windowNext = 0
    private var accumulator = TotalsAccumulator()
    private var lateDrafts: [(draft: EventDraft, sentAt: Int64)] = []
    private var summary = ExpectedTotals.Summary(lines: 0, uniqueEvents: 0, retries: 0, late: 0, invalid: 0, invalidByKind: [:])
    private var invalidCounts = [Int](repeating: 0, count: InvalidLineKind.allCases.count)
    private var scratch: [UInt8] = []

    /// A workload for a valid configuration.
    public init(_ configuration: WorkloadConfiguration) throws(WorkloadConfigurationError) {
        try configuration.validate()
        self.configuration = configuration
        random = WorkloadRandom(seed: configuration.seed)
        clock = configuration.start.microseconds
        maxGap = Int64(2_000_000 / configuration.rate)
        window.reserveCapacity(Self.retryWindow)
    }

    /// Lines not generated yet.
    public var remaining: Int { configuration.events - produced }

    /// The exact expected totals of the lines generated so far.
    public var expectedTotals: ExpectedTotals {
        var summary = summary
        for (kind, count) in zip(InvalidLineKind.allCases, invalidCounts) where count > 0 {
            summary.invalidByKind[kind.rawValue] = count
        }
        let late = lateDrafts.map { entry in
            ExpectedTotals.LateEvent(
                id: entry.draft.id, tenant: WorkloadCatalog.tenants[entry.draft.tenant], metric: entry.draft.metric.name,
                quantity: entry.draft.quantity, timestamp: EventTime(microseconds: entry.draft.timestamp),
                sentAt: EventTime(microseconds: entry.sentAt))
        }
        return ExpectedTotals(workload: configuration, summary: summary, totals: accumulator.rows, lateEvents: late)
    }

    /// The next line with its kind and event, or nil when all lines are out.
    public mutating func next() -> WorkloadLine? {
        var bytes: [UInt8] = []
        guard let (kind, draft) = step(into: &bytes) else { return nil }
        return WorkloadLine(kind: kind, bytes: bytes, event: draft?.event)
    }

    /// Appends the next line and its newline to `buffer` and returns its kind, or returns nil
    /// (appending nothing) when all lines are out.
    @discardableResult
    public mutating func appendNextLine(to buffer: inout [UInt8]) -> WorkloadLine.Kind? {
        guard let (kind, _) = step(into: &buffer) else { return nil }
        buffer.append(UInt8(ascii: "\n"))
        return kind
    }

    /// Generates one line into `out` (no newline); the draft is the valid event, if any.
    private mutating func step(into out: inout [UInt8]) -> (WorkloadLine.Kind, EventDraft?)? {
        guard produced < configuration.events else { return nil }
        produced += 1
        summary.lines += 1
        let roll = Int(random.next(below: 1_000_000))
        let now = clock
        clock += random.next(in: 0...maxGap)

        let invalidEnd = configuration.invalidPerMillion
        let lateEnd = invalidEnd + configuration.latePerMillion
        let retryEnd = lateEnd + configuration.retriesPerMillion
        if roll < invalidEnd {
            let kind = InvalidLineKind.allCases[Int(random.next(below: UInt64(InvalidLineKind.allCases.count)))]
            let choice = random.next()
            scratch.removeAll(keepingCapacity: true)
            renderer.append(EventDraft.draw(at: now, random: &random), to: &scratch)
            out.append(contentsOf: kind.corrupt(scratch, choice: choice))
            summary.invalid += 1
            if let index = InvalidLineKind.allCases.firstIndex(of: kind) { invalidCounts[index] += 1 }
            return (.invalid(kind), nil)
        }
        if roll >= lateEnd, roll < retryEnd, !window.isEmpty {
            let draft = window[Int(random.next(below: UInt64(window.count)))]
            renderer.append(draft, to: &out)
            summary.retries += 1
            return (.retry, draft)
        }
        let late = roll >= invalidEnd && roll < lateEnd
        let hour: Int64 = 3_600_000_000
        let timestamp = late ? now - random.next(in: hour...(48 * hour)) : now
        let draft = EventDraft.draw(at: timestamp, random: &random)
        renderer.append(draft, to: &out)
        accumulator.add(draft, late: late)
        summary.uniqueEvents += 1
        if late {
            summary.late += 1
            lateDrafts.append((draft, now))
        }
        if window.count < Self.retryWindow {
            window.append(draft)
        } else {
            window[windowNext] = draft
            windowNext = (windowNext + 1) % Self.retryWindow
        }
        return (late ? .late : .event, draft)
    }
}
