public import Logging
public import ServiceLifecycle
public import TallyCore
import TallyLedger

/// Bounds the batch records to the dedupe horizon (``LedgerStore/prune(now:)``) at start and then
/// every `interval`: without it the per-batch records grow forever. A batch replayed after its
/// record was pruned is refused as expired, never counted again. Safe on every collector of a
/// cluster at once (each prune is one transaction; a second finds nothing left to delete).
/// A failed run (a full ledger disk, the database away) is logged and retried at the next interval.
public struct LedgerPruner: Service {
    let ledger: Ledger
    let interval: Duration
    let clock: @Sendable () -> EventTime
    let logger: Logger

    public init(
        ledger: Ledger, interval: Duration = .seconds(3_600), clock: @escaping @Sendable () -> EventTime = { EventTime.now() },
        logger: Logger
    ) {
        self.ledger = ledger
        self.interval = interval
        self.clock = clock
        self.logger = logger
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
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                try await pruneOnce()
            } catch {
                logger.error("pruning batch records failed; retrying later", metadata: ["error": "\(error)"])
            }
            do {
                try await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) }
            } catch {
                return
            }
        }
    }
}
