import TallySpool

/// The batches cut from the spool and not yet freed, in spool order, and the one rule that frees
/// spool data: only up to the end of the contiguous acknowledged prefix. An ack for a later
/// batch marks it and frees nothing until every batch before it is acked too, so a crash at any
/// instant leaves every unacknowledged event in the spool (resent, deduplicated by the
/// collector). A pure value inside ``ShipperMachine``.
struct SpoolWindow {
    /// A batch cut from the spool: its sequence, where it ends in the spool, its event count,
    /// and whether the collector acked it.
    struct Batch: Equatable {
        var sequence: UInt64
        /// Where its data starts: the read position it was cut from ((0, 0) for "the
        /// acknowledged position", after a restart).
        var start = SpoolPosition(segment: 0, offset: 0)
        var end: SpoolPosition
        var events: Int
        var acked = false
    }

    private(set) var batches: [Batch] = []
    /// The batches the last ``acknowledge(_:)`` freed, oldest first.
    private(set) var freed: [Batch] = []

    var count: Int { batches.count }
    var isEmpty: Bool { batches.isEmpty }
    var unacknowledged: Int { batches.count(where: { !$0.acked }) }

    /// A batch was cut from the spool up to `end`. Refused (false) when `sequence` is already in
    /// the window or `end` is not after the previous batch's: no batch goes out under two
    /// sequences, no spool data under two batches.
    mutating func cut(sequence: UInt64, start: SpoolPosition = SpoolPosition(segment: 0, offset: 0), end: SpoolPosition, events: Int) -> Bool {
        if batches.contains(where: { $0.sequence == sequence }) { return false }
        if let last = batches.last, end <= last.end { return false }
        batches.append(Batch(sequence: sequence, start: start, end: end, events: events))
        return true
    }

    /// The collector acked `sequence`: its event count, and the position up to which the spool
    /// may now be freed (nil when the acked prefix did not grow). nil for a sequence not in the
    /// window (an ack for a batch freed already, or never cut).
    mutating func acknowledge(_ sequence: UInt64) -> (events: Int, freeUpTo: SpoolPosition?)? {
        guard let index = batches.firstIndex(where: { $0.sequence == sequence }), !batches[index].acked else { return nil }
        batches[index].acked = true
        let events = batches[index].events
        var freeUpTo: SpoolPosition?
        freed = []
        while let first = batches.first, first.acked {
            freeUpTo = first.end
            freed.append(first)
            batches.removeFirst()
        }
        return (events, freeUpTo)
    }
}
