import TallyCore
import TallyService
public import TallySpool

/// Answers `/healthz` and refreshes the spool gauges (the spool's filesystem too): the spool must
/// be writable (open, not full) and a collector reachable (a session open now).
public struct AgentHealth: Sendable {
    /// One health check's findings.
    public struct Report: Sendable, Hashable {
        public var spoolWritable: Bool
        public var spoolDetail: String
        public var collectorReachable: Bool
        public var collectorDetail: String
        public var isHealthy: Bool { spoolWritable && collectorReachable }

        var json: String {
            "{\"status\":\"\(isHealthy ? "ok" : "degraded")\",\"spool\":{\"writable\":\(spoolWritable),\"detail\":"
                + JSONWriter.quoted(spoolDetail) + "},\"collector\":{\"reachable\":\(collectorReachable),\"detail\":"
                + JSONWriter.quoted(collectorDetail) + "}}\n"
        }
    }

    let spool: Spool
    let shipper: ShipperStatus?
    let metrics: AgentMetrics

    public init(spool: Spool, shipper: ShipperStatus?, metrics: AgentMetrics) {
        self.spool = spool
        self.shipper = shipper
        self.metrics = metrics
    }

    public func check() async -> Report {
        var report = Report(spoolWritable: false, spoolDetail: "", collectorReachable: false, collectorDetail: "")
        do {
            let stats = try await spool.stats()
            update(stats)
            let atLimit = stats.bytesOnDisk >= Int64(spool.options.maxSpoolBytes)
            report.spoolWritable = !atLimit && stats.writeFailure == nil
            var detail =
                if let failure = stats.writeFailure {
                    "not writable: \(failure)"
                } else if atLimit {
                    "full: \(stats.bytesOnDisk) of \(spool.options.maxSpoolBytes) bytes"
                } else {
                    "\(stats.events) events, \(stats.backlogBytes) bytes waiting"
                }
            if stats.missingSegments > 0 {
                detail +=
                    "; \(stats.missingSegments) segments were found missing or emptied (events lost outside the agent; see tallyctl spool verify)"
            }
            report.spoolDetail = detail
        } catch {
            report.spoolDetail = error.description
        }
        if let status = shipper?.snapshot {
            if let collector = status.connectedTo {
                report.collectorReachable = true
                report.collectorDetail = "connected to \(collector)"
            } else {
                report.collectorDetail = status.lastError ?? "not connected yet"
            }
        } else {
            report.collectorDetail = "no shipper"
        }
        return report
    }

    func refreshSpoolGauges() async {
        if let stats = try? await spool.stats() { update(stats) }
    }

    private func update(_ stats: SpoolStats) {
        metrics.spoolWriteFailing.record(stats.writeFailure == nil ? 0 : 1)
        metrics.spoolMissingSegments.record(stats.missingSegments)
        metrics.spoolBytes.record(stats.backlogBytes)
        metrics.spoolEvents.record(stats.events)
        if let oldest = stats.oldestEventTime, stats.events > 0 {
            metrics.spoolOldestAge.record(max(0, EventTime.now().seconds - oldest.seconds))
        } else {
            metrics.spoolOldestAge.record(0)
        }
        if let space = FilesystemSpace.of(path: spool.directory) {
            metrics.spoolFilesystemAvailable.record(space.availableBytes)
            metrics.spoolFilesystemSize.record(space.sizeBytes)
        }
    }
}
