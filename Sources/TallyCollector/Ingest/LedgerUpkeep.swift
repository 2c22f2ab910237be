public import Logging
public import ServiceLifecycle
public import TallyCore
import TallyLedger

/// The ledger's upkeep, on a schedule:
/// - **Pruning.** Bounds the batch records to the dedupe horizon (``LedgerStore/prune(now:)``) at
///   start and then every `interval`: without it the per-batch records grow forever. A batch
///   replayed after its record was pruned is refused as expired, never counted again.
/// - **Folding.** Folds the aggregate log every `foldInterval` (by default the ledger's,
///   ``Ledger/upkeepFoldInterval``), so that an idle collector does not keep an unfolded log,
///   and a read on a backend that folds first (PostgreSQL) seldom has to. The schedule is not
///   what makes reads exact: a read sees every committed batch either way. Under ingest the
///   writer folds by itself when the log is large enough (`aggregateBufferCells`).
///
/// Safe on every collector of a cluster at once (each prune or fold is one transaction; a second
/// finds nothing left). A failed run (a full ledger disk, the database away) is logged and
/// retried at the next interval.
public struct LedgerUpkeep: Service {
    let ledger: Ledger
    let interval: Duration
    let foldInterval: Duration
    let clock: @Sendable () -> EventTime
    let logger: Logger

    public init(
        ledger: Ledger, interval: Duration = .seconds(3_600), foldInterval: Duration? = nil,
        clock: @escaping @Sendable () -> EventTime = { EventTime.now() }, logger: Logger
    ) {
        self.ledger = ledger
        self.interval = interval
        self.foldInterval = foldInterval ?? ledger.upkeepFoldInterval
        self.clock = clock
        self.logger = logger
    }

    /// One fold, now, unless another collector of the cluster is folding (its fold takes what
    /// was logged before it; a writer held waiting for it would hold its commits too).
    public func foldOnce() async throws {
        try await ledger.perform { store throws(LedgerError) in try store.foldAggregatesUnlessFolding() }
    }

    /// One prune, now; returns how many batch records it deleted.
    @discardableResult
    public func pruneOnce() async throws -> Int {
        let now = clock()
        let report = try await ledger.perform { store throws(LedgerError) in try store.prune(now: now) }
        if report.batchRecordsDeleted > 0 {
            logger.info("pruned batch records older than the dedupe horizon", metadata: ["records": "\(report.batchRecordsDeleted)"])
        }
        return report.batchRecordsDeleted
    }

    public func run() async throws {
        var nextPrune = ContinuousClock.now
        var foldFailing = false
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            if ContinuousClock.now >= nextPrune {
                do {
                    try await pruneOnce()
                } catch {
                    logger.error("pruning batch records failed; retrying later", metadata: ["error": "\(error)"])
                }
                nextPrune = ContinuousClock.now + interval
            }
            do {
                try await foldOnce()
                if foldFailing { logger.notice("folding the aggregate log works again") }
                foldFailing = false
            } catch {
                // One line per failing spell, not one per interval.
                if !foldFailing { logger.error("folding the aggregate log failed; retrying", metadata: ["error": "\(error)"]) }
                foldFailing = true
            }
            do {
                try await cancelWhenGracefulShutdown { try await Task.sleep(for: min(foldInterval, interval)) }
            } catch {
                return
            }
        }
    }
}
