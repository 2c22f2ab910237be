import Synchronization
import TallyCore

/// A row a store's open transaction logged: its cells, its reconciliation counts as logged
/// (``ReconciliationLogCodec``; nil for a correction's row) and its id.
struct LoggedRow: Sendable {
    var cells: AggregateCells
    var counts: [UInt8]?
    var row: Int64
}

/// The aggregate log as the store that writes it knows it: the cells and reconciliation counts
/// of each row it logged since the log was last empty, kept in memory, so that the fold takes
/// them from here instead of reading every row back and decoding it (a quarter of the writer's
/// time before).
///
/// **Why it is exact.** It starts empty when a fold of this store empties the log, at the
/// generation that fold leaves; a row joins it once the transaction that inserted it commits.
/// Rows leave the log only by a fold, and every fold bumps the generation. So while the
/// generation is unchanged, every row it holds is still in the log; and when the log then holds
/// as many rows as it does, with the same last row, the log is exactly its rows — no other
/// connection (a `tallyctl` beside the collector) logged or folded meanwhile. The fold checks
/// this inside its own transaction and otherwise reads the rows, as after opening.
///
/// **Who merges.** Merging each committed batch's cells into the mirror was about a tenth of the
/// writer thread's time under ingest, and the writer is what limits ingest. So the writer only
/// queues a committed batch's row (``add(_:)``, an append under a lock held for nothing
/// else), and the merging is done by a thread with time to spare: the collector's preparation
/// threads, between two batches (``mergeQueued()`` through ``LogMerger``); whatever is still
/// queued when the fold asks, the fold merges itself. A merge in progress holds the state lock,
/// so a fold waits at most for the batches that merge took out of the queue, never for the next.
final class LogMirror: Sendable {
    private struct State {
        /// The fold generation the log was empty at; nil while the mirror does not know the log
        /// (after opening with rows in it, or after a failed fold), until the next fold.
        var generation: Int64?
        /// The rows' cells, merged: the dictionary grows to the distinct cells, and keeps its
        /// storage from one fold to the next.
        var cells = AggregateCells()
        /// The rows' reconciliation counts, summed.
        var counts = ReconciliationSums()
        var rows: Int64 = 0
        var lastRow: Int64 = 0
        /// Batches merged by ``LogMirror/mergeQueued()`` rather than by a fold (tests).
        var mergedAhead = 0

        mutating func merge(_ batches: [LoggedRow]) {
            guard generation != nil else { return }
            for batch in batches {
                do throws(LedgerError) {
                    try cells.merge(batch.cells)
                    if let logged = batch.counts {
                        try logged.withUnsafeBytes { bytes in
                            Result { () throws(LedgerError) in try ReconciliationLogCodec.decode(bytes, into: &counts) }
                        }.get()
                    }
                } catch {
                    // A sum past the range: the fold reads the rows and reports it.
                    generation = nil
                    return
                }
                rows += 1
                lastRow = batch.row
            }
        }
    }

    private let state = Mutex(State())
    /// Committed batches' cells not merged yet, oldest first.
    private let queued = Mutex<[LoggedRow]>([])
    /// ``distinctCellsBound``'s parts, kept apart from the locks so that the writer reads them
    /// without waiting for a merge in progress: the merged cells' count (-1 while the mirror does
    /// not know the log), and the cells of the batches queued or being merged.
    private let mergedCells = Atomic<Int>(-1)
    private let unmergedCells = Atomic<Int>(0)

    /// At least as many as the distinct cells the log holds (the merged cells plus every cell of
    /// the batches not merged yet): what a fold of it would write, and what the mirror's memory
    /// grows with. Nil while the mirror does not know the log. The preparation threads merge the
    /// queued batches ahead of the fold, so under ingest it stays close to the exact count.
    var distinctCellsBound: Int? {
        let merged = mergedCells.load(ordering: .acquiring)
        guard merged >= 0 else { return nil }
        return merged + unmergedCells.load(ordering: .acquiring)
    }

    /// Whether the mirror knows the log (it does from the first fold or empty open on).
    var isKnown: Bool { state.withLock { $0.generation != nil } }

    /// Batches merged ahead of the fold, by ``mergeQueued()`` (tests).
    var batchesMergedAhead: Int { state.withLock { $0.mergedAhead } }

    /// A committed batch's logged row. The writer's only cost: an append.
    func add(_ batch: LoggedRow) {
        unmergedCells.add(batch.cells.cells.count, ordering: .releasing)
        queued.withLock { $0.append(batch) }
    }

    /// Merges the queued batches, on the calling thread; returns at once when another thread is
    /// merging (it takes what is queued too).
    func mergeQueued() {
        _ = state.withLockIfAvailable { state in
            state.mergedAhead += mergeQueued(into: &state)
        }
    }

    /// The merged cells and summed counts when the log holds exactly these rows (`rows` rows,
    /// the last `lastRow`, at `generation`); nil otherwise. Merges what is still queued first.
    func contents(ifLogHas rows: Int64, lastRow: Int64, generation: Int64) -> (AggregateCells, ReconciliationSums)? {
        state.withLock { state -> (AggregateCells, ReconciliationSums)? in
            mergeQueued(into: &state)
            guard state.generation == generation, rows == state.rows, lastRow == state.lastRow else { return nil }
            return (state.cells, state.counts)
        }
    }

    /// Empty again, at `generation` (a fold emptied the log).
    func restart(at generation: Int64) {
        state.withLock { state in
            _ = takeQueued()
            state.generation = generation
            state.cells.removeAll()
            state.counts.removeAll(keepingCapacity: true)
            state.rows = 0
            state.lastRow = 0
            unmergedCells.store(0, ordering: .releasing)
            mergedCells.store(0, ordering: .releasing)
        }
    }

    /// Not the log any more (a fold failed): the next fold reads the rows.
    func forget() {
        state.withLock { state in
            _ = takeQueued()
            state.generation = nil
            state.cells.removeAll()
            state.counts.removeAll()
            unmergedCells.store(0, ordering: .releasing)
            mergedCells.store(-1, ordering: .releasing)
        }
    }

    /// Takes the queued batches and merges them into `state` (held under its lock); their cells
    /// move from the unmerged count to the merged one (unknown if the merge lost the log).
    /// Returns how many batches it merged.
    @discardableResult
    private func mergeQueued(into state: inout State) -> Int {
        let batches = takeQueued()
        state.merge(batches)
        mergedCells.store(state.generation == nil ? -1 : state.cells.cells.count, ordering: .releasing)
        unmergedCells.subtract(batches.reduce(0) { $0 + $1.cells.cells.count }, ordering: .releasing)
        return batches.count
    }

    private func takeQueued() -> [LoggedRow] {
        queued.withLock { queue in
            var taken: [LoggedRow] = []
            swap(&taken, &queue)
            return taken
        }
    }
}

/// Merges the SQLite writer's committed log cells into its ``LogMirror`` on the calling thread
/// (see there): the collector calls ``mergeQueued()`` on its preparation threads.
public struct LogMerger: Sendable {
    let mirror: LogMirror

    public func mergeQueued() { mirror.mergeQueued() }
}
