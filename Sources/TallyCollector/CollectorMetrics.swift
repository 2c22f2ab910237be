public import Metrics
import TallyLedger

/// The collector's Prometheus metrics, created through swift-metrics so that the executable
/// chooses the backend.
public struct CollectorMetrics: Sendable {
    public let batches = Counter(label: "tally_collector_batches_total")
    public let replayedBatches = Counter(label: "tally_collector_batches_replayed_total")
    public let malformedPayloads = Counter(label: "tally_collector_malformed_payloads_total")
    public let accepted = Counter(label: "tally_collector_events_total", dimensions: [("status", "accepted")])
    public let duplicate = Counter(label: "tally_collector_events_total", dimensions: [("status", "duplicate")])
    public let late = Counter(label: "tally_collector_events_total", dimensions: [("status", "late")])
    public let rejected = Counter(label: "tally_collector_events_total", dimensions: [("status", "rejected")])
    public let bytesIn = Counter(label: "tally_collector_bytes_in_total")
    public let bytesOut = Counter(label: "tally_collector_bytes_out_total")
    public let connections = Meter(label: "tally_collector_connections")
    public let connectionsTotal = Counter(label: "tally_collector_connections_total")
    public let authFailures = Counter(label: "tally_collector_auth_failures_total")
    public let frameErrors = Counter(label: "tally_collector_frame_errors_total")
    public let refusedPeers = Counter(label: "tally_collector_refused_peers_total")
    /// Agent connections whose TLS handshake failed (a plain client, an untrusted certificate).
    public let tlsFailures = Counter(label: "tally_collector_tls_failures_total")
    public let commitLatency = Timer(label: "tally_collector_commit_seconds")
    public let pingsSent = Counter(label: "tally_collector_pings_total")
    public let idleClosed = Counter(label: "tally_collector_idle_connections_closed_total")
    public let goawaysSent = Counter(label: "tally_collector_goaways_total")
    /// Batches that arrived after this connection's goaway: dropped unacknowledged (the agent
    /// resends them elsewhere).
    public let batchesAfterGoaway = Counter(label: "tally_collector_batches_after_goaway_total")

    public init() {}

    func record(_ outcome: BatchOutcome) {
        batches.increment()
        accepted.increment(by: outcome.accepted)
        duplicate.increment(by: outcome.duplicate)
        late.increment(by: outcome.late)
        rejected.increment(by: outcome.rejected)
    }
}
