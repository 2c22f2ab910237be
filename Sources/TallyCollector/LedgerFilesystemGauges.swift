import Glibc
public import Metrics
import Synchronization
public import TallyLedger
import TallyService

/// The space left where an embedded (SQLite) ledger lives, refreshed at each scrape of
/// `/metrics`: `tally_collector_ledger_filesystem_avail_bytes` (what the collector may still
/// write) and `tally_collector_ledger_filesystem_size_bytes`. A full disk fails commits (then
/// `/readyz` is 503), so these show it coming. A PostgreSQL ledger has none: its disk is the
/// database server's to watch.
///
/// With them, the write-ahead log: `tally_collector_ledger_wal_bytes` (the `-wal` file's size;
/// it restarts from its beginning after each complete checkpoint, so a figure that keeps growing
/// means checkpoints do not complete) and `tally_collector_ledger_checkpoints_total` by `where`:
/// `background` (the checkpointer's thread, ``WALCheckpointer``), `writer` (the writer had to,
/// the log having reached four times the threshold) and `failed`.
public final class LedgerFilesystemGauges: Sendable {
    /// The directory holding the ledger file (and SQLite's `-wal` and `-shm` files).
    public let directory: String
    private let walPath: String
    private let available: Gauge
    private let size: Gauge
    private let walBytes: Gauge
    private let checkpoints: (background: Counter, writer: Counter, failed: Counter)
    /// The checkpoint counts already added to the counters.
    private let counted = Mutex(WALCheckpointer.Checkpoints())

    /// Gauges for the ledger file at `ledgerPath`, created through `factory` (the bootstrapped
    /// one unless a test gives its own).
    public init(ledgerPath: String, factory: any MetricsFactory = MetricsSystem.factory) {
        directory = Self.directory(containing: ledgerPath)
        walPath = ledgerPath + "-wal"
        available = Gauge(label: "tally_collector_ledger_filesystem_avail_bytes", factory: factory)
        size = Gauge(label: "tally_collector_ledger_filesystem_size_bytes", factory: factory)
        walBytes = Gauge(label: "tally_collector_ledger_wal_bytes", factory: factory)
        let label = "tally_collector_ledger_checkpoints_total"
        checkpoints = (
            Counter(label: label, dimensions: [("where", "background")], factory: factory),
            Counter(label: label, dimensions: [("where", "writer")], factory: factory),
            Counter(label: label, dimensions: [("where", "failed")], factory: factory)
        )
    }

    /// The directory of a file path, like `dirname`: "." for a bare name, "/" at the root.
    static func directory(containing path: String) -> String {
        let slash = path.lastIndex(of: "/")
        return slash.map { $0 == path.startIndex ? "/" : String(path[..<$0]) } ?? "."
    }

    /// Reads the filesystem's space now (`statvfs`; keeps the last figures when it cannot), the
    /// log's size, and the checkpoints counted so far by the ledger's checkpointer, if it has one.
    public func refresh(checkpoints counts: WALCheckpointer.Checkpoints? = nil) {
        var status = stat()
        walBytes.record(stat(walPath, &status) == 0 ? Int64(status.st_size) : 0)
        if let counts {
            let before = counted.withLock { counted in
                defer { counted = counts }
                return counted
            }
            checkpoints.background.increment(by: max(0, counts.background - before.background))
            checkpoints.writer.increment(by: max(0, counts.writer - before.writer))
            checkpoints.failed.increment(by: max(0, counts.failed - before.failed))
        }
        guard let space = FilesystemSpace.of(path: directory) else { return }
        available.record(space.availableBytes)
        size.record(space.sizeBytes)
    }
}
