import Synchronization

/// What this process's commits logged since its last fold, merged: the cells and reconciliation
/// counts of aggregate log rows it committed, and their ids. The fold takes these rows' cells
/// from here instead of reading the rows back and decoding them (a collector's fold spent most
/// of its time decoding; profile in `PostgresLedgerStore+Fold`).
///
/// Shared by the stores of one process on one database (a collector's pool of writers), since
/// whichever of them folds claims the rows all of them logged. Only ever an optimisation: the
/// fold uses the merged cells only when every row they came from is still in the log under the
/// fold lock (``PostgresLedgerStore/flushAggregates(waiting:)`` checks), and deletes exactly
/// those rows with them in the same transaction; otherwise it drops them and reads the rows.
/// A crash loses nothing: the rows are in the table.
final class PostgresLogMemory: Sendable {
    /// The merged rows, taken whole by a fold.
    struct Rows {
        var ids: [Int64] = []
        var cells = AggregateCells()
        /// The rows' encoded reconciliation counts (small; decoded by the fold).
        var counts: [[UInt8]] = []
        /// Set when the rows grew past ``limit``: what is held is dropped and nothing more is
        /// added until the next fold takes the memory (those rows are read back, as without it).
        var overflowed = false
    }

    /// Cells held at most: the store configuration's `aggregateBufferCells`, the cells a fold
    /// may hold anyway (about 200 bytes each). Folds come every few seconds, so this is only
    /// reached when they keep failing or skipping while commits succeed.
    let limit: Int
    private let rows = Mutex(Rows())
    /// The highest log row id the last claiming fold of this process saw in the log: a fold
    /// that claims only this process's rows also claims every row up to it, so the rows of a
    /// collector that died (nobody holds them in memory) are folded one fold interval later.
    private let horizon = Mutex<Int64>(0)

    init(limit: Int = 1_000_000) { self.limit = limit }

    /// Adds a committed log row: its id, cells and encoded reconciliation counts. Called after
    /// the row's transaction committed, never before (a rolled-back row must not be here).
    func add(id: Int64, cells: AggregateCells, counts: [UInt8]?) {
        rows.withLock { rows in
            guard !rows.overflowed else { return }
            guard rows.cells.count + cells.count <= limit else {
                rows = Rows()
                rows.overflowed = true
                return
            }
            do {
                try rows.cells.merge(cells)
                if let counts { rows.counts.append(counts) }
                rows.ids.append(id)
            } catch {
                // A sum out of range here is one the fold would also meet: let the fold read the
                // rows and report it.
                rows = Rows()
                rows.overflowed = true
            }
        }
    }

    /// Takes every merged row, leaving the memory empty (and accepting rows again), with room
    /// for as many cells as it held: merging into a dictionary that grew from empty at every fold
    /// (each growth a new table, copied, its pages faulted in) was a quarter of a collector's
    /// writer threads in a cluster drain (perf).
    func take() -> Rows {
        rows.withLock { rows in
            var fresh = Rows()
            fresh.cells = AggregateCells(minimumCapacity: min(rows.cells.count, limit))
            defer { rows = fresh }
            return rows
        }
    }

    /// Rows held now (tests).
    var heldIDs: [Int64] { rows.withLock { $0.ids } }

    var lastHorizon: Int64 {
        get { horizon.withLock { $0 } }
        set { horizon.withLock { $0 = max($0, newValue) } }
    }

    private static let shared = PerDatabase<PostgresLogMemory>()

    /// The memory of the stores of this process on `address`'s database (the first store to
    /// ask sets its `limit`).
    static func shared(for address: PostgresAddress, limit: Int) -> PostgresLogMemory {
        shared.object(for: address) { PostgresLogMemory(limit: limit) }
    }
}

/// What a process keeps once per database (``PostgresLogMemory``, ``PostgresRecentKeys``),
/// shared by its stores on that database: keyed by `user@host:port/database`.
final class PerDatabase<Object: Sendable>: Sendable {
    private let objects = Mutex<[String: Object]>([:])

    /// The object for `address`'s database, made by `make` the first time.
    func object(for address: PostgresAddress, _ make: () -> Object) -> Object {
        let key = "\(address.user)@\(address.host):\(address.port)/\(address.database)"
        return objects.withLock { objects in
            if let object = objects[key] { return object }
            let object = make()
            objects[key] = object
            return object
        }
    }
}
