import Synchronization
import TallyCore

/// The writer-thread work of a commit done ahead, on a preparation thread: the batch's
/// classification, the aggregate cells of its billable events as if none of their keys were
/// stored yet, and those cells encoded as the aggregate log row.
///
/// The single ledger writer is what limits a collector's ingest (`tally-bench agent`'s drain kept
/// it 84% busy), and most of its time went into merging events into cells and encoding them. The
/// store still decides everything with the real answer to "which keys are stored"
/// (``BatchClassification/plan(existing:groupBy:uniqueCounts:keepsMinimum:levelMetrics:speculated:)``):
/// the cells an event that turned out to be stored was counted in are rebuilt from the events
/// billed in them, so the plan is the one it would have made event by event. The log row,
/// sectioned by tenant (what both stores write), is used whatever was stored, with the sections
/// of the tenants whose events were found stored encoded afresh.
public final class LedgerSpeculation: Sendable {
    let configuration: LedgerConfiguration
    let classification: BatchClassification
    /// The log row of `cells.cells`, as its sections, or nil when a billable event is of a
    /// level metric (the writer adds level changes to the cells, after reading the neighbours).
    let encoded: AggregateLogCodec.Sections?
    /// The speculated cells and the plan made ahead, until the writer takes them
    /// (``plan(existing:)``): taken rather than copied, so that the writer owns the cells alone
    /// and changes only the few a stored event was counted in.
    private let made: Mutex<Made?>
    /// What the writer took and no longer needs, kept so that it is freed with the speculation,
    /// by the committer, not on the single writer thread (see `Ledger.commit`).
    private let spent = Mutex<SpeculatedCells?>(nil)

    struct Made {
        var cells: SpeculatedCells
        /// The plan when no candidate's key turns out stored: the writer persists it as it is,
        /// or, when some keys were stored (with client retries, almost every batch holds a
        /// few), moves those events to the duplicates
        /// (``BatchClassification/adjust(_:existing:groupBy:uniqueCounts:keepsMinimum:speculated:)``);
        /// nil when it could not be made (the writer plans, and reports the error, itself).
        /// Its cells are `cells.cells`, the same storage.
        var plannedIfNoneStored: LedgerPlan?
    }

    init(
        configuration: LedgerConfiguration, classification: BatchClassification, cells: SpeculatedCells, encoded: AggregateLogCodec.Sections?,
        plannedIfNoneStored: LedgerPlan?
    ) {
        self.configuration = configuration
        self.classification = classification
        self.encoded = encoded
        made = Mutex(Made(cells: cells, plannedIfNoneStored: plannedIfNoneStored))
    }

    /// The speculated cells, while the writer has not taken them (tests).
    var cells: SpeculatedCells? { made.withLock { $0?.cells } }
    /// The plan made ahead, while the writer has not taken it (tests).
    var plannedIfNoneStored: LedgerPlan? { made.withLock { $0?.plannedIfNoneStored } }

    /// The plan for `existing` (which candidates' keys were stored): the one made ahead when
    /// none was; otherwise that one with the stored events moved to the duplicates
    /// (``BatchClassification/adjust(_:existing:groupBy:uniqueCounts:keepsMinimum:speculated:)``),
    /// or, when that cannot be done, made now from the speculated cells. The same plan either way:
    /// ``BatchClassification/plan(existing:groupBy:uniqueCounts:keepsMinimum:levelMetrics:speculated:)``
    /// with this speculation's configuration, which the store checked (``applies(to:)``).
    ///
    /// Takes what was made ahead: a second call (a commit of the same prepared batch attempted
    /// again) plans in full, the same plan at the cost of the whole batch.
    func plan(existing: [Bool]) throws(LedgerError) -> LedgerPlan {
        guard var made = made.withLock({ $0.take() }) else { return try configuration.plan(classification, existing: existing) }
        guard var plan = made.plannedIfNoneStored else {
            return try configuration.plan(classification, existing: existing, speculated: made.cells)
        }
        // The plan's cells are the speculated ones: let go of the second reference, so that
        // adjusting them does not copy them all.
        made.plannedIfNoneStored = nil
        made.cells.cells = AggregateCells()
        defer { spent.withLock { [made] in $0 = made.cells } }
        if !existing.contains(true) { return plan }
        if try configuration.adjust(&plan, classification, existing: existing, speculated: made.cells) { return plan }
        made.cells.cells = plan.cells
        return try configuration.plan(classification, existing: existing, speculated: made.cells)
    }

    /// Whether it was made for a store of `configuration`; otherwise the store ignores it.
    func applies(to configuration: LedgerConfiguration) -> Bool { configuration == self.configuration }

    /// The log row of `cells`, the plan's cells for `existing` (which candidates' keys were
    /// stored): the row encoded ahead with the sections of the tenants of stored billable
    /// events encoded afresh from `cells` (the plan rebuilt only those tenants' cells).
    func encodedCells(existing: [Bool], cells: AggregateCells) -> [UInt8]? {
        guard let sections = encoded else { return nil }
        var changed = Set<String>()
        for (candidate, stored) in zip(classification.candidates, existing) where stored {
            guard candidate.status == .accepted || candidate.status == .adjusted, let event = classification.event(candidate.index) else {
                continue
            }
            changed.insert(event.tenant)
        }
        return sections.row(changing: changed, to: cells)
    }
}

/// The cells of every billable candidate (accepted or adjusted) as if new, and for each cell the
/// candidates (positions in ``BatchClassification/candidates``) counted in it.
public struct SpeculatedCells: Sendable {
    var cells: AggregateCells
    /// Each cell's latest contribution in ``links``.
    private var latest: [AggregateCellKey: Int32] = [:]
    /// Every contribution: the candidate's position and the cell's contribution before it (-1:
    /// none). One flat array rather than an array per cell: a batch has thousands of cells, and
    /// as many small arrays cost an allocation each on the preparation thread and a release
    /// wherever the batch is freed.
    private var links: [(position: Int32, previous: Int32)] = []

    init(minimumCapacity: Int) {
        cells = AggregateCells(minimumCapacity: minimumCapacity)
        latest.reserveCapacity(minimumCapacity)
        links.reserveCapacity(minimumCapacity)
    }

    /// Counts `aggregate`, of the candidate at `position`, in the cell `key`.
    mutating func add(_ aggregate: UsageAggregate, at key: AggregateCellKey, position: Int) throws(LedgerError) {
        try cells.add(aggregate, at: key)
        // One lookup: the cell's previous contribution comes back as this one replaces it.
        let previous = latest.updateValue(Int32(links.count), forKey: key) ?? -1
        links.append((Int32(position), previous))
    }

    /// The positions of the candidates counted in the cell `key`, in the order they were added.
    func contributors(of key: AggregateCellKey) -> [Int] {
        var positions: [Int] = []
        var link = latest[key] ?? -1
        while link >= 0 {
            positions.append(Int(links[Int(link)].position))
            link = links[Int(link)].previous
        }
        return positions.reversed()
    }
}

/// Makes a ``LedgerSpeculation`` for a store's configuration; a Sendable value the collector
/// calls on its preparation threads (``LedgerStore/batchSpeculator()``).
public struct BatchSpeculator: Sendable {
    let configuration: LedgerConfiguration

    init(configuration: LedgerConfiguration) {
        self.configuration = configuration
    }

    /// `prepared` with its speculation (unchanged when the cells cannot be made, e.g. a sum
    /// out of range: the writer then plans, and reports the error, itself).
    public func speculate(_ prepared: PreparedBatch) -> PreparedBatch {
        // Each step takes up to a millisecond for a batch of thousands of events: a read waiting
        // for this core runs between them (YieldPoint).
        let classification = LedgerRules.classify(prepared, window: configuration.lateWindow)
        YieldPoint.between()
        var speculatedCells = SpeculatedCells(minimumCapacity: classification.candidates.count * 2)
        var levels = false
        for (position, candidate) in classification.candidates.enumerated()
        where candidate.status == .accepted || candidate.status == .adjusted {
            YieldPoint.after(step: position, every: 64)
            guard let event = classification.event(candidate.index) else { continue }
            let one = AggregateCells.aggregate(
                of: event, fingerprint: candidate.fingerprint, keepsMinimum: configuration.keepsMinimum(event.metric))
            do {
                try AggregateCells.forEachKey(of: event, billedIn: candidate.billedIn, groupBy: configuration.groupBy(of: event.metric)) {
                    (key) throws(LedgerError) in
                    try speculatedCells.add(one, at: key, position: position)
                }
            } catch {
                return prepared
            }
            if configuration.levelMetrics.contains(event.metric) { levels = true }
        }
        YieldPoint.between()
        let encoded = levels || speculatedCells.cells.isEmpty ? nil : AggregateLogCodec.Sections(speculatedCells.cells)
        YieldPoint.between()
        let none = [Bool](repeating: false, count: classification.candidates.count)
        var speculated = prepared
        speculated.speculation = LedgerSpeculation(
            configuration: configuration, classification: classification, cells: speculatedCells, encoded: encoded,
            plannedIfNoneStored: try? configuration.plan(classification, existing: none, speculated: speculatedCells))
        return speculated
    }
}
