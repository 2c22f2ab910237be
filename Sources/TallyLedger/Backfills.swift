public import TallyCore

/// An explicit, audited import of historical events (`tallyctl backfill`): its identity, why it
/// was made, what became of its lines, and whether it was reverted. The events themselves go
/// through the ledger like any batch — agent `backfill:ID`, deduplicated by (event time,
/// fingerprint), late ones billed as adjustments on the next open invoice — except that the
/// late-arrival limit (`too_old`) does not apply to them. A revert voids every event the
/// backfill stored, as corrections keyed `revert:ID/FINGERPRINT`.
public struct BackfillRecord: Sendable, Hashable {
    public var id: String
    public var reason: String
    /// Who ran it (the operating-system user of `tallyctl`).
    public var actor: String
    /// The file it read, as given.
    public var source: String
    public var startedAt: EventTime
    /// Lines read so far, and what became of them: lines = accepted + duplicate + late + rejected.
    public var counts: ReconciliationCounts
    public var finished: Bool
    public var revertedAt: EventTime?
    public var revertReason: String?

    public init(
        id: String, reason: String, actor: String, source: String, startedAt: EventTime, counts: ReconciliationCounts = ReconciliationCounts(),
        finished: Bool = false, revertedAt: EventTime? = nil, revertReason: String? = nil
    ) {
        self.id = id
        self.reason = reason
        self.actor = actor
        self.source = source
        self.startedAt = startedAt
        self.counts = counts
        self.finished = finished
        self.revertedAt = revertedAt
        self.revertReason = revertReason
    }

    /// The agent name its batches carry.
    public var agent: String { Self.agentPrefix + id }
    public static let agentPrefix = "backfill:"
}
