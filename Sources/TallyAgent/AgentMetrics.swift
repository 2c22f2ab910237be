public import CoreMetrics
import Metrics
public import Prometheus

/// The agent's metrics (swift-metrics, exported in Prometheus text on `GET /metrics`).
///
/// Names: `tally_agent_events_received_total`, `..._accepted_total`, `..._rejected_total`
/// (label `reason`), `tally_agent_requests_refused_total` (label `status`: 413, 429, 503),
/// `tally_agent_spool_bytes`, `tally_agent_spool_events`, `tally_agent_spool_oldest_age_seconds`,
/// `tally_agent_batches_in_flight`, `tally_agent_batches_sent_total`, `tally_agent_acks_total`
/// (label `status`), `tally_agent_events_acked_total` (label `outcome`), `tally_agent_reconnects_total`,
/// `tally_agent_connected`, and the histogram `tally_agent_spool_append_seconds` (the time from
/// an append to the fsync that covers it).
public final class AgentMetrics: Sendable {
    /// The registry `/metrics` renders.
    public let registry: PrometheusCollectorRegistry
    let received: Counter
    let accepted: Counter
    private let rejectedByReason: [String: Counter]
    private let refusedByStatus: [Int: Counter]
    let spoolBytes: Gauge
    let spoolEvents: Gauge
    let spoolOldestAge: Gauge
    let batchesInFlight: Gauge
    let batchesSent: Counter
    let acksCommitted: Counter
    let acksMalformed: Counter
    let eventsAcked: [String: Counter]
    let reconnects: Counter
    let connected: Gauge
    let appendLatency: CoreMetrics.Timer

    /// Metrics in `registry` (a fresh one by default, so tests can read their own).
    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = [
            .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5),
            .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .seconds(1),
        ]
        received = Counter(label: "tally_agent_events_received_total", factory: factory)
        accepted = Counter(label: "tally_agent_events_accepted_total", factory: factory)
        var rejected: [String: Counter] = [:]
        for reason in ["malformed", "missing_field", "invalid_field", "unknown_field", "limit_exceeded", "future_timestamp", "too_old", "late"] {
            rejected[reason] = Counter(label: "tally_agent_events_rejected_total", dimensions: [("reason", reason)], factory: factory)
        }
        rejectedByReason = rejected
        var refused: [Int: Counter] = [:]
        for status in [400, 413, 429, 503] {
            refused[status] = Counter(label: "tally_agent_requests_refused_total", dimensions: [("status", String(status))], factory: factory)
        }
        refusedByStatus = refused
        spoolBytes = Gauge(label: "tally_agent_spool_bytes", factory: factory)
        spoolEvents = Gauge(label: "tally_agent_spool_events", factory: factory)
        spoolOldestAge = Gauge(label: "tally_agent_spool_oldest_age_seconds", factory: factory)
        batchesInFlight = Gauge(label: "tally_agent_batches_in_flight", factory: factory)
        batchesSent = Counter(label: "tally_agent_batches_sent_total", factory: factory)
        acksCommitted = Counter(label: "tally_agent_acks_total", dimensions: [("status", "committed")], factory: factory)
        acksMalformed = Counter(label: "tally_agent_acks_total", dimensions: [("status", "malformed")], factory: factory)
        var acked: [String: Counter] = [:]
        for outcome in ["accepted", "duplicate", "late", "rejected"] {
            acked[outcome] = Counter(label: "tally_agent_events_acked_total", dimensions: [("outcome", outcome)], factory: factory)
        }
        eventsAcked = acked
        reconnects = Counter(label: "tally_agent_reconnects_total", factory: factory)
        connected = Gauge(label: "tally_agent_connected", factory: factory)
        appendLatency = CoreMetrics.Timer(label: "tally_agent_spool_append_seconds", factory: factory)
    }

    func rejected(_ reason: String) { rejectedByReason[reason]?.increment() }
    func refused(status: Int) { refusedByStatus[status]?.increment() }

    /// The Prometheus text exposition of every metric.
    public func exposition() -> [UInt8] { registry.emitToBuffer() }
}
