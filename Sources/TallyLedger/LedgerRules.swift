public import TallyCore

/// The rules that decide what each event of a batch becomes — accepted, adjusted, late,
/// duplicate or rejected — with the reconciliation counts, aggregate cells and unique values
/// that follow. Pure: no I/O, the same answer for the same input, so every backend bills alike
/// and the rules are tested without a database. A backend only persists what they decide,
/// inside the batch's transaction.
///
/// Two steps, because one fact comes from the store:
/// 1. ``classify(_:window:)`` decides, from the batch and the late window alone (the batch's
///    arrival time is the clock, so a replay is classified exactly as the original was), which
///    events are refused and which raw rows the batch may add — one per distinct
///    (timestamp, fingerprint) key in the batch, the first occurrence winning; later
///    occurrences are duplicates already. A raw row's content does not depend on what the
///    store holds, so a backend can insert the candidates with "on conflict do nothing" and
///    learn from that insert which keys existed.
/// 2. ``BatchClassification/plan(existing:groupBy:uniqueCounts:)`` takes the store's answer —
///    which candidates' keys existed already — and returns the ``LedgerPlan``.
public enum LedgerRules {
    public static func classify(_ prepared: PreparedBatch, window: LateWindow) -> BatchClassification {
        let batch = prepared.batch
        let now = batch.receivedAt
        var result = BatchClassification(prepared: prepared)
        result.candidates.reserveCapacity(batch.events.count)
        var seen = Set<RawKey>(minimumCapacity: batch.events.count)
        var scratch: [UInt8] = []
        for (index, item) in batch.events.enumerated() {
            switch item {
            case .invalid(let invalid):
                result.refusals.append(.init(index: index, invalid: invalid, fingerprint: nil))
            case .valid(let event):
                let fingerprint = prepared.fingerprints[index] ?? Fingerprint(of: event, scratch: &scratch)
                let status: EventStatus
                var billedIn: BillingPeriod?
                switch window.classify(event.timestamp, now: now) {
                case .future, .tooOld:
                    let rejection = rejection(for: event, window: window, now: now)
                    result.refusals.append(.init(index: index, invalid: InvalidEvent(rejection), fingerprint: fingerprint))
                    continue
                case .onTime: status = .accepted
                case .adjustment(_, let billed):
                    status = .adjusted
                    billedIn = billed
                case .late: status = .late
                }
                guard seen.insert(RawKey(timestamp: event.timestamp, fingerprint: fingerprint)).inserted else {
                    result.repeats.append(.init(index: index, fingerprint: fingerprint))
                    continue
                }
                result.candidates.append(.init(index: index, fingerprint: fingerprint, status: status, billedIn: billedIn))
            }
        }
        return result
    }

    /// The rejection of a too-old or future event, with a message a person can act on.
    static func rejection(for event: UsageEvent, window: LateWindow, now: EventTime) -> EventRejection {
        if let future = EventRejection.future(event.timestamp, now: now, skew: window.maxFutureSkew) { return future }
        let oldest = now.advanced(by: .zero - window.lateArrivalLimit)
        return EventRejection(
            .tooOld, field: "timestamp", "\(event.timestamp) is before \(oldest) (arrival time minus the late-arrival limit)")
    }
}

/// The dedupe key of the raw ledger: event time and fingerprint.
public struct RawKey: Sendable, Hashable, Comparable {
    public var timestamp: EventTime
    public var fingerprint: Fingerprint

    public init(timestamp: EventTime, fingerprint: Fingerprint) {
        self.timestamp = timestamp
        self.fingerprint = fingerprint
    }

    public static func < (a: RawKey, b: RawKey) -> Bool {
        (a.timestamp, a.fingerprint) < (b.timestamp, b.fingerprint)
    }
}

/// Step one of ``LedgerRules``: what a batch may add before the store is asked anything.
public struct BatchClassification: Sendable {
    /// A raw row the batch may add: a valid event within the late-arrival limit, the first of its
    /// key in the batch.
    public struct Candidate: Sendable, Hashable {
        public var index: Int
        public var fingerprint: Fingerprint
        /// `accepted`, `adjusted` or `late`.
        public var status: EventStatus
        /// For `adjusted`: the open period it is billed in.
        public var billedIn: BillingPeriod?
    }

    /// An event refused by the rules: invalid at decoding (no fingerprint), too old or from the
    /// future (with the event and its fingerprint, kept for the explanation).
    public struct Refusal: Sendable, Hashable {
        public var index: Int
        public var invalid: InvalidEvent
        public var fingerprint: Fingerprint?
    }

    /// An event whose key appeared earlier in the same batch: a duplicate whatever the store holds.
    public struct Repeat: Sendable, Hashable {
        public var index: Int
        public var fingerprint: Fingerprint
    }

    public let prepared: PreparedBatch
    /// In batch order.
    public var candidates: [Candidate] = []
    public var refusals: [Refusal] = []
    public var repeats: [Repeat] = []

    init(prepared: PreparedBatch) { self.prepared = prepared }

    /// The valid event at `index`.
    public func event(_ index: Int) -> UsageEvent? {
        if case .valid(let event) = prepared.batch.events[index] { return event }
        return nil
    }

    /// The (timestamp, fingerprint) key of each candidate, in candidate order.
    public var candidateKeys: [RawKey] {
        candidates.compactMap { candidate in
            event(candidate.index).map { RawKey(timestamp: $0.timestamp, fingerprint: candidate.fingerprint) }
        }
    }

    /// Step two: the plan, given which candidates' keys the store held already
    /// (`existing[i]` for `candidates[i]`). Throws ``LedgerError/quantityOverflow(_:)`` when the
    /// batch's own cells leave the 128-bit range.
    public func plan(existing: [Bool], groupBy: [String], uniqueCounts: [String: [String]]) throws(LedgerError) -> LedgerPlan {
        try plan(existing: existing, groupBy: { _ in groupBy }, uniqueCounts: uniqueCounts)
    }

    /// ``plan(existing:groupBy:uniqueCounts:)`` with each metric's own group-by properties
    /// (``LedgerConfiguration/groupBy(of:)``).
    public func plan(
        existing: [Bool], groupBy: (String) -> [String], uniqueCounts: [String: [String]], keepsMinimum: (String) -> Bool = { _ in true },
        levelMetrics: Set<String> = [], speculated: SpeculatedCells? = nil
    ) throws(LedgerError) -> LedgerPlan {
        precondition(existing.count == candidates.count, "one answer per candidate")
        let batch = prepared.batch
        let now = batch.receivedAt
        var plan = LedgerPlan()
        // A batch's events mostly fall in different cells (tenant, metric, group-by values): room
        // for two cells per event spares the writer thread the rehashing of a growing dictionary.
        plan.cells = speculated?.cells ?? AggregateCells(minimumCapacity: candidates.count * 2)
        // Cells the speculation counted an event in that turned out to be stored already.
        var overcounted = Set<AggregateCellKey>()
        var counts: [ReconciliationKey: ReconciliationCounts] = [:]

        func count(_ status: EventStatus, tenant: String, period: BillingPeriod) {
            counts[ReconciliationKey(period: period, tenant: tenant), default: .init()].count(status)
        }
        for refusal in refusals {
            let event = self.event(refusal.index)
            let tenant = event?.tenant ?? refusal.invalid.tenant ?? ""
            let period = BillingPeriod(explaining: event?.timestamp ?? refusal.invalid.timestamp, arrivedAt: now)
            plan.outcome.rejections.append(.init(index: refusal.index, reason: refusal.invalid.rejection.reason))
            plan.outcome.rejected += 1
            count(.rejected, tenant: tenant, period: period)
        }
        var duplicates = repeats.map { LedgerPlan.Duplicate(index: $0.index, fingerprint: $0.fingerprint) }
        for (position, candidate) in candidates.enumerated() {
            guard let event = event(candidate.index) else { continue }
            let period = BillingPeriod(explaining: event.timestamp, arrivedAt: now)
            if existing[position] {
                duplicates.append(.init(index: candidate.index, fingerprint: candidate.fingerprint))
                if speculated != nil, candidate.status == .accepted || candidate.status == .adjusted {
                    try AggregateCells.forEachKey(of: event, billedIn: candidate.billedIn, groupBy: groupBy(event.metric)) {
                        overcounted.insert($0)
                    }
                }
                continue
            }
            plan.inserted.append(candidate)
            count(candidate.status, tenant: event.tenant, period: period)
            switch candidate.status {
            case .accepted: plan.outcome.accepted += 1
            case .adjusted:
                plan.outcome.late += 1
                plan.outcome.adjusted += 1
            case .late:
                plan.outcome.late += 1
                plan.outcome.rejections.append(.init(index: candidate.index, reason: .late))
                continue
            case .duplicate, .rejected: continue
            }
            if speculated == nil {
                try plan.cells.add(
                    event, fingerprint: candidate.fingerprint, billedIn: candidate.billedIn, groupBy: groupBy(event.metric),
                    keepsMinimum: keepsMinimum(event.metric))
            }
            if !levelMetrics.isEmpty, levelMetrics.contains(event.metric) {
                plan.levels.append(
                    Levels.Event(
                        series: Levels.Series(tenant: event.tenant, metric: event.metric),
                        row: Levels.Row(key: RawKey(timestamp: event.timestamp, fingerprint: candidate.fingerprint), quantity: event.quantity),
                        billedIn: candidate.billedIn))
            }
            for property in uniqueCounts[event.metric] ?? [] {
                guard let value = event.properties[property] else { continue }
                plan.uniqueValues.append(
                    .init(
                        tenant: event.tenant, metric: event.metric, property: property, period: period, value: value,
                        billedIn: candidate.billedIn ?? period))
            }
        }
        if let speculated {
            try rebuild(overcounted, in: &plan.cells, existing: existing, keepsMinimum: keepsMinimum, speculated: speculated)
        }
        for duplicate in duplicates {
            guard let event = event(duplicate.index) else { continue }
            plan.outcome.duplicate += 1
            count(.duplicate, tenant: event.tenant, period: BillingPeriod(explaining: event.timestamp, arrivedAt: now))
        }
        plan.duplicates = duplicates.sorted { $0.index < $1.index }
        plan.outcome.rejections.sort { $0.index < $1.index }
        // Sorted, so that two transactions updating the same rows take their locks in one order.
        plan.reconciliation = counts.map { LedgerPlan.ReconciliationDelta(period: $0.key.period, tenant: $0.key.tenant, counts: $0.value) }
            .sorted { ($0.period, $0.tenant) < ($1.period, $1.tenant) }
        return plan
    }

    /// Makes `plan`, this batch's plan when no key is stored (made ahead by
    /// ``LedgerSpeculation``), the plan for `existing`, by moving only the events found stored:
    /// out of the inserted rows, their counts and their cells, into the duplicates. The same plan
    /// ``plan(existing:groupBy:uniqueCounts:keepsMinimum:levelMetrics:speculated:)`` makes, at the
    /// cost of the stored events rather than of the whole batch: the reference workload's client
    /// retries repeat one of the last 1,024 events, so almost every batch holds a few events
    /// whose key a batch before it stored, and planning those batches afresh was 7% of the
    /// ledger writer's time in a drain. False, with `plan` untouched, when the plan cannot be
    /// made this way (level metrics, or a stored event of a metric with unique counts): the
    /// caller plans in full.
    ///
    /// In place, so that a caller who owns the plan's cells alone changes the few cells of the
    /// stored events rather than a copy of them all: a copy of a batch's thousands of cells was
    /// 4% of the writer's time in `tally-bench ingest`.
    func adjust(
        _ plan: inout LedgerPlan, existing: [Bool], groupBy: (String) -> [String], uniqueCounts: [String: [String]],
        keepsMinimum: (String) -> Bool, speculated: SpeculatedCells
    ) throws(LedgerError) -> Bool {
        precondition(existing.count == candidates.count, "one answer per candidate")
        guard plan.levels.isEmpty else { return false }
        let now = prepared.batch.receivedAt
        // First whether it can be done, so that `plan` is changed only when it will be done.
        var rows: [(candidate: Candidate, event: UsageEvent, row: Int)] = []
        for (position, candidate) in candidates.enumerated() where existing[position] {
            guard let event = event(candidate.index) else { continue }
            switch candidate.status {
            case .accepted, .adjusted: if !(uniqueCounts[event.metric] ?? []).isEmpty { return false }
            case .late: break
            case .duplicate, .rejected: return false
            }
            let period = BillingPeriod(explaining: event.timestamp, arrivedAt: now)
            guard let row = Self.row(of: period, tenant: event.tenant, in: plan.reconciliation) else { return false }
            rows.append((candidate, event, row))
        }
        guard !rows.isEmpty else { return true }
        var stored = Set<Int>()
        var lateStored = Set<Int>()
        var overcounted = Set<AggregateCellKey>()
        for (candidate, event, row) in rows {
            switch candidate.status {
            case .accepted:
                plan.outcome.accepted -= 1
                plan.reconciliation[row].counts.accepted -= 1
            case .adjusted:
                plan.outcome.late -= 1
                plan.outcome.adjusted -= 1
                plan.reconciliation[row].counts.late -= 1
                plan.reconciliation[row].counts.adjusted -= 1
            case .late:
                plan.outcome.late -= 1
                plan.reconciliation[row].counts.late -= 1
                lateStored.insert(candidate.index)
            case .duplicate, .rejected: continue
            }
            // Received once either way: now as a duplicate.
            plan.outcome.duplicate += 1
            plan.reconciliation[row].counts.duplicate += 1
            plan.duplicates.append(.init(index: candidate.index, fingerprint: candidate.fingerprint))
            stored.insert(candidate.index)
            if candidate.status == .accepted || candidate.status == .adjusted {
                try AggregateCells.forEachKey(of: event, billedIn: candidate.billedIn, groupBy: groupBy(event.metric)) {
                    overcounted.insert($0)
                }
            }
        }
        plan.inserted.removeAll { stored.contains($0.index) }
        if !lateStored.isEmpty { plan.outcome.rejections.removeAll { $0.reason == .late && lateStored.contains($0.index) } }
        plan.duplicates.sort { $0.index < $1.index }
        try rebuild(overcounted, in: &plan.cells, existing: existing, keepsMinimum: keepsMinimum, speculated: speculated)
        return true
    }

    /// Each of the `overcounted` cells (speculated cells a stored event was counted in) again
    /// from the events billed in it: merging is exact in any order, so this is the cell a plan
    /// would have built event by event (a cell left with no event goes).
    private func rebuild(
        _ overcounted: Set<AggregateCellKey>, in cells: inout AggregateCells, existing: [Bool], keepsMinimum: (String) -> Bool,
        speculated: SpeculatedCells
    ) throws(LedgerError) {
        for key in overcounted {
            var merged: UsageAggregate?
            for position in speculated.contributors(of: key) where !existing[position] {
                let candidate = candidates[position]
                guard let event = event(candidate.index) else { continue }
                let one = AggregateCells.aggregate(of: event, fingerprint: candidate.fingerprint, keepsMinimum: keepsMinimum(event.metric))
                if merged == nil { merged = one } else { try merged?.merge(one) }
            }
            cells.set(merged, at: key)
        }
    }

    /// The position of (period, tenant) in `rows`, sorted by (period, tenant) as plans are.
    private static func row(of period: BillingPeriod, tenant: String, in rows: [LedgerPlan.ReconciliationDelta]) -> Int? {
        var low = 0
        var high = rows.count
        while low < high {
            let middle = (low + high) / 2
            if (rows[middle].period, rows[middle].tenant) < (period, tenant) { low = middle + 1 } else { high = middle }
        }
        return low < rows.count && rows[low].period == period && rows[low].tenant == tenant ? low : nil
    }

    private struct ReconciliationKey: Hashable {
        var period: BillingPeriod
        var tenant: String
    }
}

/// Everything a batch writes, decided by ``LedgerRules``; a backend persists it in the batch's
/// transaction, with the batch record.
public struct LedgerPlan: Sendable {
    /// An event not billed because its key is in the ledger already (or earlier in its batch).
    public struct Duplicate: Sendable, Hashable {
        public var index: Int
        public var fingerprint: Fingerprint
    }

    /// Counts to add to one (period, tenant) row of the batch's agent.
    public struct ReconciliationDelta: Sendable, Hashable {
        public var period: BillingPeriod
        public var tenant: String
        public var counts: ReconciliationCounts
    }

    /// A value of a configured unique-count pair, first seen in `period`, billed in `billedIn`.
    public struct UniqueValue: Sendable, Hashable {
        public var tenant: String
        public var metric: String
        public var property: String
        public var period: BillingPeriod
        public var value: String
        public var billedIn: BillingPeriod
    }

    public var outcome = BatchOutcome()
    /// The candidates whose keys were new: the raw rows the batch added, in batch order.
    public var inserted: [BatchClassification.Candidate] = []
    /// In batch order.
    public var duplicates: [Duplicate] = []
    /// Sorted by (period, tenant).
    public var reconciliation: [ReconciliationDelta] = []
    /// The aggregate cells of the billed rows (accepted and adjusted).
    public var cells = AggregateCells()
    /// The billed events of level metrics (``LedgerConfiguration/levelMetrics``), in batch order:
    /// the store reads each series' neighbourhood, adds their level changes to ``cells``
    /// (``completeLevels(_:)``) and stores their rows.
    public var levels: [Levels.Event] = []

    /// The level events by series, sorted (the order a store locks and reads them in).
    public var levelSeries: [(series: Levels.Series, events: [Levels.Event])] {
        Dictionary(grouping: levels, by: \.series).sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
    }

    /// Adds the level changes of ``levels`` to ``cells``, reading each series' stored rows with
    /// `neighbourhood` (its events' smallest and largest keys; see ``Levels``).
    public mutating func completeLevels(
        _ neighbourhood: (Levels.Series, RawKey, RawKey) throws(LedgerError) -> [Levels.Row]
    ) throws(LedgerError) {
        for (series, events) in levelSeries {
            let keys = events.map(\.row.key)
            guard let first = keys.min(), let last = keys.max() else { continue }
            try Levels.addChanges(of: events, neighbourhood: try neighbourhood(series, first, last), to: &cells)
        }
    }
    public var uniqueValues: [UniqueValue] = []
}
