public import Metrics
import TallyService

/// The space left where an embedded (SQLite) ledger lives, refreshed at each scrape of
/// `/metrics`: `tally_collector_ledger_filesystem_avail_bytes` (what the collector may still
/// write) and `tally_collector_ledger_filesystem_size_bytes`. A full disk fails commits (then
/// `/readyz` is 503), so these show it coming. A PostgreSQL ledger has none: its disk is the
/// database server's to watch.
public struct LedgerFilesystemGauges: Sendable {
    /// The directory holding the ledger file (and SQLite's `-wal` and `-shm` files).
    public let directory: String
    private let available: Gauge
    private let size: Gauge

    /// Gauges for the ledger file at `ledgerPath`, created through `factory` (the bootstrapped
    /// one unless a test gives its own).
    public init(ledgerPath: String, factory: any MetricsFactory = MetricsSystem.factory) {
        directory = Self.directory(containing: ledgerPath)
        available = Gauge(label: "tally_collector_ledger_filesystem_avail_bytes", factory: factory)
        size = Gauge(label: "tally_collector_ledger_filesystem_size_bytes", factory: factory)
    }

    /// The directory of a file path, like `dirname`: "." for a bare name, "/" at the root.
    static func directory(containing path: String) -> String {
        let slash = path.lastIndex(of: "/")
        return slash.map { $0 == path.startIndex ? "/" : String(path[..<$0]) } ?? "."
    }

    /// Reads the filesystem's space now (`statvfs`); keeps the last figures when it cannot.
    public func refresh() {
        guard let space = FilesystemSpace.of(path: directory) else { return }
        available.record(space.availableBytes)
        size.record(space.sizeBytes)
    }
}
