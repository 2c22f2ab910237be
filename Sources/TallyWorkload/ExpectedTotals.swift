#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
public import TallyCore

/// The exact truth about a generated workload: what should be billed once per tenant, metric and
/// billing period, and how every line is explained (unique event, retry, late, invalid).
///
/// Every unique valid event (each fingerprint once) counts in the period of its own timestamp;
/// retries and invalid lines count nowhere but in the summary. Late events are part of the totals
/// of their period and are also given separately (`lateCount`, `lateQuantity` per row, and each
/// one in `lateEvents` with the stream-clock instant it was sent at), so a check can apply a
/// grace-window policy and still reconcile.
///
/// ## File format `tally-expected-totals/1` (stable; `tallyctl gen --expect FILE` writes it)
/// One JSON object, keys sorted, written compactly (shown indented here; parse it as JSON):
/// ```json
/// {
///   "format": "tally-expected-totals/1",
///   "workload": {"seed": 1, "events": 100000, "start": "2026-04-01T00:00:00Z", "rate": 100,
///                "retriesPerMillion": 10000, "latePerMillion": 1000, "invalidPerMillion": 100},
///   "summary": {"lines": 100000, "uniqueEvents": 98896, "retries": 994, "late": 100,
///               "invalid": 10, "invalidByKind": {"broken_json": 2, "missing_tenant": 1}},
///   "totals": [
///     {"tenant": "t0001", "metric": "api_calls", "period": "2026-04",
///      "quantity": "10321", "count": 10321, "lateQuantity": "9", "lateCount": 9}
///   ],
///   "lateEvents": [
///     {"id": "3f0c…", "tenant": "t0007", "metric": "bytes_out", "period": "2026-03",
///      "quantity": "5120", "timestamp": "2026-03-31T22:10:04.000120Z",
///      "sentAt": "2026-04-01T03:00:01.250031Z"}
///   ]
/// }
/// ```
/// - `quantity`, `lateQuantity`: exact decimals as strings (canonical `Quantity` text), never
///   JSON numbers, so no reader passes them through binary floating point.
/// - `totals` is sorted by tenant, metric and period, and has one row per combination that has
///   at least one event; `count` is the number of unique events, `lateCount` how many of them
///   were late (timestamp 1-48 h behind the stream clock when generated).
/// - `lines = uniqueEvents + retries + invalid`; `late` is the number of unique late events
///   (a retry of a late event counts as a retry); `invalidByKind` uses ``InvalidLineKind``'s raw
///   values and lists only kinds that occurred.
/// - `lateEvents` lists every unique late event in generation order; `sentAt` is the stream
///   clock when it was generated (the simulated arrival), `timestamp` its own event time.
/// - New optional keys may be added within version 1; a reader must ignore keys it does not know.
public struct ExpectedTotals: Sendable, Hashable {
    /// The value of the `format` key this code writes and reads.
    public static let formatVersion = "tally-expected-totals/1"

    /// The configuration that produced the workload.
    public var workload: WorkloadConfiguration
    /// How the lines divide up.
    public var summary: Summary
    /// The billed-once totals, sorted by tenant, metric and period.
    public var totals: [Row]
    /// Every unique late event, in generation order.
    public var lateEvents: [LateEvent]

    public init(workload: WorkloadConfiguration, summary: Summary, totals: [Row], lateEvents: [LateEvent] = []) {
        self.workload = workload
        self.summary = summary
        self.totals = totals
        self.lateEvents = lateEvents
    }

    /// One late event: its identity, where it counts, and when the stream sent it.
    public struct LateEvent: Sendable, Hashable {
        public var id: String
        public var tenant: String
        public var metric: String
        public var quantity: Quantity
        /// The event's own time; it counts in the period of this instant.
        public var timestamp: EventTime
        /// The stream clock when the event was generated: 1 to 48 hours after `timestamp`.
        public var sentAt: EventTime

        public var period: BillingPeriod { BillingPeriod(containing: timestamp) }

        public init(id: String, tenant: String, metric: String, quantity: Quantity, timestamp: EventTime, sentAt: EventTime) {
            self.id = id
            self.tenant = tenant
            self.metric = metric
            self.quantity = quantity
            self.timestamp = timestamp
            self.sentAt = sentAt
        }
    }

    /// How the lines of a workload divide up; `lines == uniqueEvents + retries + invalid`.
    public struct Summary: Sendable, Hashable, Codable {
        public var lines: Int
        public var uniqueEvents: Int
        public var retries: Int
        public var late: Int
        public var invalid: Int
        /// Invalid lines by ``InvalidLineKind`` raw value.
        public var invalidByKind: [String: Int]

        public init(lines: Int, uniqueEvents: Int, retries: Int, late: Int, invalid: Int, invalidByKind: [String: Int]) {
            self.lines = lines
            self.uniqueEvents = uniqueEvents
            self.retries = retries
            self.late = late
            self.invalid = invalid
            self.invalidByKind = invalidByKind
        }
    }

    /// What one tenant should be billed for one metric in one period.
    public struct Row: Sendable, Hashable {
        public var tenant: String
        public var metric: String
        public var period: BillingPeriod
        /// The sum of the quantities of the unique events.
        public var quantity: Quantity
        /// The number of unique events.
        public var count: Int
        /// The part of `quantity` that came from late events.
        public var lateQuantity: Quantity
        /// How many of the `count` events were late.
        public var lateCount: Int

        public init(
            tenant: String, metric: String, period: BillingPeriod, quantity: Quantity, count: Int,
            lateQuantity: Quantity = .zero, lateCount: Int = 0
        ) {
            self.tenant = tenant
            self.metric = metric
            self.period = period
            self.quantity = quantity
            self.count = count
            self.lateQuantity = lateQuantity
            self.lateCount = lateCount
        }
    }

    /// The row of one tenant, metric and period, if it had any event.
    public func row(tenant: String, metric: String, period: BillingPeriod) -> Row? {
        totals.first { $0.tenant == tenant && $0.metric == metric && $0.period == period }
    }

    /// The sum of `quantity` over the rows that match; `nil` filters nothing.
    public func quantity(
        tenant: String? = nil, metric: String? = nil, period: BillingPeriod? = nil
    ) throws(ArithmeticOverflow)
        -> Quantity
    {
        var sum = Quantity.zero
        for row in totals
        where (tenant == nil || row.tenant == tenant) && (metric == nil || row.metric == metric)
            && (period == nil || row.period == period)
        {
            sum = try sum.adding(row.quantity)
        }
        return sum
    }
}

/// Why expected totals could not be written or read.
public enum ExpectedTotalsError: Error, Sendable, Hashable, CustomStringConvertible {
    case unreadable(path: String, reason: String)
    case unwritable(path: String, reason: String)
    case malformed(String)
    case unsupportedFormat(String)

    public var description: String {
        switch self {
        case .unreadable(let path, let reason): "cannot read expected totals from '\(path)': \(reason)"
        case .unwritable(let path, let reason): "cannot write expected totals to '\(path)': \(reason)"
        case .malformed(let reason): "the expected totals are not valid: \(reason)"
        case .unsupportedFormat(let format):
            "expected totals in format '\(format)' are not supported (this build reads '\(ExpectedTotals.formatVersion)')"
        }
    }
}

// MARK: - Reading and writing

extension ExpectedTotals {
    /// The file's JSON bytes (see the format above), written by Tally's one JSON writer.
    public func jsonBytes() throws(ExpectedTotalsError) -> [UInt8] {
        do {
            return Array(try JSONWriter.encode(FileShape(self)).utf8)
        } catch {
            throw .malformed("\(error)")
        }
    }

    /// Parses the file's JSON bytes.
    public init(jsonBytes: [UInt8]) throws(ExpectedTotalsError) {
        let shape: FileShape
        do {
            shape = try JSONDecoder().decode(FileShape.self, from: Data(jsonBytes))
        } catch let error as ExpectedTotalsError {
            throw error
        } catch {
            throw .malformed("\(error)")
        }
        guard shape.format == Self.formatVersion else { throw .unsupportedFormat(shape.format) }
        self = try shape.expectedTotals()
    }

    /// Writes the file to `path`, replacing it.
    public func write(to path: String) throws(ExpectedTotalsError) {
        let bytes = try jsonBytes() + [UInt8(ascii: "\n")]
        do {
            try Data(bytes).write(to: URL(fileURLWithPath: path), options: .atomic)
        } catch {
            throw .unwritable(path: path, reason: "\(error)")
        }
    }

    /// Reads a file written by ``write(to:)`` (or `tallyctl gen --expect`).
    public static func read(from path: String) throws(ExpectedTotalsError) -> ExpectedTotals {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw .unreadable(path: path, reason: "\(error)")
        }
        return try ExpectedTotals(jsonBytes: Array(data))
    }
}

/// The Codable mirror of the file; quantities, periods and times travel as strings.
private struct FileShape: Codable {
    struct Workload: Codable {
        var seed: UInt64
        var events: Int
        var start: String
        var rate: Int
        var retriesPerMillion: Int
        var latePerMillion: Int
        var invalidPerMillion: Int
    }

    struct Row: Codable {
        var tenant: String
        var metric: String
        var period: String
        var quantity: String
        var count: Int
        var lateQuantity: String
        var lateCount: Int
    }

    var format: String
    var workload: Workload
    struct LateEvent: Codable {
        var id: String
        var tenant: String
        var metric: String
        var period: String
        var quantity: String
        var timestamp: String
        var sentAt: String
    }

    var summary: ExpectedTotals.Summary
    var totals: [Row]
    var lateEvents: [LateEvent]?

    init(_ totals: ExpectedTotals) {
        format = ExpectedTotals.formatVersion
        let w = totals.workload
        workload = Workload(
            seed: w.seed, events: w.events, start: w.start.description, rate: w.rate,
            retriesPerMillion: w.retriesPerMillion, latePerMillion: w.latePerMillion,
            invalidPerMillion: w.invalidPerMillion)
        summary = totals.summary
        self.totals = totals.totals.map {
            Row(
                tenant: $0.tenant, metric: $0.metric, period: $0.period.description, quantity: $0.quantity.description,
                count: $0.count, lateQuantity: $0.lateQuantity.description, lateCount: $0.lateCount)
        }
        lateEvents = totals.lateEvents.map {
            LateEvent(
                id: $0.id, tenant: $0.tenant, metric: $0.metric, period: $0.period.description,
                quantity: $0.quantity.description, timestamp: $0.timestamp.description, sentAt: $0.sentAt.description)
        }
    }

    func expectedTotals() throws(ExpectedTotalsError) -> ExpectedTotals {
        let start: EventTime
        do {
            start = try EventTime(parsing: workload.start)
        } catch {
            throw .malformed("workload.start: \(error)")
        }
        let configuration = WorkloadConfiguration(
            seed: workload.seed, events: workload.events, start: start, rate: workload.rate,
            retriesPerMillion: workload.retriesPerMillion, latePerMillion: workload.latePerMillion,
            invalidPerMillion: workload.invalidPerMillion)
        var rows: [ExpectedTotals.Row] = []
        rows.reserveCapacity(totals.count)
        for (index, row) in totals.enumerated() {
            guard let period = BillingPeriod(row.period) else {
                throw .malformed("totals[\(index)].period '\(row.period)' is not YYYY-MM")
            }
            let quantity: Quantity
            let lateQuantity: Quantity
            do {
                quantity = try Quantity(parsing: row.quantity)
                lateQuantity = try Quantity(parsing: row.lateQuantity)
            } catch {
                throw .malformed("totals[\(index)]: \(error)")
            }
            rows.append(
                ExpectedTotals.Row(
                    tenant: row.tenant, metric: row.metric, period: period, quantity: quantity, count: row.count,
                    lateQuantity: lateQuantity, lateCount: row.lateCount))
        }
        var late: [ExpectedTotals.LateEvent] = []
        for (index, event) in (lateEvents ?? []).enumerated() {
            do {
                late.append(
                    ExpectedTotals.LateEvent(
                        id: event.id, tenant: event.tenant, metric: event.metric, quantity: try Quantity(parsing: event.quantity),
                        timestamp: try EventTime(parsing: event.timestamp), sentAt: try EventTime(parsing: event.sentAt)))
            } catch {
                throw .malformed("lateEvents[\(index)]: \(error)")
            }
        }
        return ExpectedTotals(workload: configuration, summary: summary, totals: rows, lateEvents: late)
    }
}
