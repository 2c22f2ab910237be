public import Metrics
import TallyLedger

/// The collector's Prometheus metrics, created through swift-metrics so that the executable
/// chooses the backend.
public struct CollectorMetrics: Sendable {
    public let batches: Counter
    public let replayedBatches: Counter
    public let malformedPayloads: Counter
    public let accepted: Counter
    public let duplicate: Counter
    public let late: Counter
    public let rejected: Counter
    public let bytesIn: Counter
    public let bytesOut: Counter
    public let connections: Meter
    public let connectionsTotal: Counter
    public let authFailures: Counter
    public let frameErrors: Counter
    public let refusedPeers: Counter
    /// Agent connections whose TLS handshake failed (a plain client, an untrusted certificate).
    public let tlsFailures: Counter
    public let commitLatency: Timer
    /// Groups of queued batches the ledger writer committed together, each in one transaction
    /// (unless one of them failed, and each was then committed alone): with
    /// `tally_collector_batches_total`, the batches per transaction (SQLite groups them; on
    /// PostgreSQL each batch is a group of one).
    public let commitGroups: Counter
    /// Commits the store refused (a full disk, an I/O error); the agents resend those batches.
    public let commitFailures: Counter
    /// 1 while the latest commit succeeded, 0 while commits fail in the store (`/readyz` is 503).
    public let ledgerWritable: Gauge
    public let pingsSent: Counter
    public let idleClosed: Counter
    public let goawaysSent: Counter
    /// Batches that arrived after this connection's goaway: dropped unacknowledged (the agent
    /// resends them elsewhere).
    public let batchesAfterGoaway: Counter

    /// Creates every metric through `factory` (the bootstrapped one unless a test gives its own).
    public init(factory: any MetricsFactory = MetricsSystem.factory) {
        batches = Counter(label: "tally_collector_batches_total", factory: factory)
        replayedBatches = Counter(label: "tally_collector_batches_replayed_total", factory: factory)
        malformedPayloads = Counter(label: "tally_collector_malformed_payloads_total", factory: factory)
        accepted = Counter(label: "tally_collector_events_total", dimensions: [("status", "accepted")], factory: factory)
        duplicate = Counter(label: "tally_collector_events_total", dimensions: [("status", "duplicate")], factory: factory)
        late = Counter(label: "tally_collector_events_total", dimensions: [("status", "late")], factory: factory)
        rejected = Counter(label: "tally_collector_events_total", dimensions: [("status", "rejected")], factory: factory)
        bytesIn = Counter(label: "tally_collector_bytes_in_total", factory: factory)
        bytesOut = Counter(label: "tally_collector_bytes_out_total", factory: factory)
        connections = Meter(label: "tally_collector_connections", factory: factory)
        connectionsTotal = Counter(label: "tally_collector_connections_total", factory: factory)
        authFailures = Counter(label: "tally_collector_auth_failures_total", factory: factory)
        frameErrors = Counter(label: "tally_collector_frame_errors_total", factory: factory)
        refusedPeers = Counter(label: "tally_collector_refused_peers_total", factory: factory)
        tlsFailures = Counter(label: "tally_collector_tls_failures_total", factory: factory)
        commitLatency = Timer(label: "tally_collector_commit_seconds", factory: factory)
        commitGroups = Counter(label: "tally_collector_commit_groups_total", factory: factory)
        commitFailures = Counter(label: "tally_collector_commit_failures_total", factory: factory)
        ledgerWritable = Gauge(label: "tally_collector_ledger_writable", factory: factory)
        pingsSent = Counter(label: "tally_collector_pings_total", factory: factory)
        idleClosed = Counter(label: "tally_collector_idle_connections_closed_total", factory: factory)
        goawaysSent = Counter(label: "tally_collector_goaways_total", factory: factory)
        batchesAfterGoaway = Counter(label: "tally_collector_batches_after_goaway_total", factory: factory)
        ledgerWritable.record(1)
    }

    func record(_ outcome: BatchOutcome) {
        batches.increment()
        accepted.increment(by: outcome.accepted)
        duplicate.increment(by: outcome.duplicate)
        late.increment(by: outcome.late)
        rejected.increment(by: outcome.rejected)
    }
}
