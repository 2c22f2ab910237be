import CoreMetrics
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
/// an append to the fsync that covers it); HTTP: `tally_agent_http_connections`,
/// `tally_agent_http_connections_refused_total`, `tally_agent_http_timeouts_total` (label `phase`);
/// disk: `tally_agent_spool_write_failing` (1 while appends or checkpoints fail, e.g. a full
/// disk), `tally_agent_spool_checkpoint_failures_total`, `tally_agent_spool_missing_segments`,
/// `tally_agent_spool_filesystem_avail_bytes` and `tally_agent_spool_filesystem_size_bytes` (the
/// spool's filesystem, read at each scrape and health check).
public final class AgentMetrics: Sendable {
    /// The registry `/metrics` renders.
    public let registry: PrometheusCollectorRegistry
    let received: CoreMetrics.Counter
    let accepted: CoreMetrics.Counter
    private let rejectedByReason: [String: CoreMetrics.Counter]
    private let refusedByStatus: [Int: CoreMetrics.Counter]
    let spoolBytes: CoreMetrics.Gauge
    let spoolEvents: CoreMetrics.Gauge
    let spoolOldestAge: CoreMetrics.Gauge
    let batchesInFlight: CoreMetrics.Gauge
    let batchesSent: CoreMetrics.Counter
    let acksCommitted: CoreMetrics.Counter
    let acksMalformed: CoreMetrics.Counter
    let eventsAcked: [String: CoreMetrics.Counter]
    let reconnects: CoreMetrics.Counter
    let connected: CoreMetrics.Gauge
    let appendLatency: CoreMetrics.Timer
    /// Every group-commit fsync of the spool.
    let fsyncLatency: CoreMetrics.Timer
    /// Open HTTP ingest connections.
    let httpConnections: CoreMetrics.Meter
    /// Request-body bytes buffered across HTTP connections.
    let httpBodyBytesInFlight: CoreMetrics.Meter
    /// HTTP connections refused at the connection cap.
    let httpRefusedConnections: CoreMetrics.Counter
    /// HTTP connections closed for a deadline, by phase (idle, head, body).
    let httpTimeouts: [HTTPConnectionClock.Phase: CoreMetrics.Counter]
    /// Checkpoint (acknowledged position) writes that failed and wait to be retried.
    let checkpointFailures: CoreMetrics.Counter
    /// 1 while the spool's writes fail (a full disk, the size limit, an I/O error), else 0.
    let spoolWriteFailing: CoreMetrics.Gauge
    /// Gaps in the spool's segment numbers found at start: events lost outside the agent.
    let spoolMissingSegments: CoreMetrics.Gauge
    /// Bytes an unprivileged writer may still use on the spool's filesystem.
    let spoolFilesystemAvailable: CoreMetrics.Gauge
    /// The size of the spool's filesystem.
    let spoolFilesystemSize: CoreMetrics.Gauge

    /// Metrics in `registry` (a fresh one by default, so tests can read their own).
    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = [
            .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5),
            .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .seconds(1),
        ]
        received = CoreMetrics.Counter(label: "tally_agent_events_received_total", factory: factory)
        accepted = CoreMetrics.Counter(label: "tally_agent_events_accepted_total", factory: factory)
        var rejected: [String: CoreMetrics.Counter] = [:]
        for reason in ["malformed", "missing_field", "invalid_field", "unknown_field", "limit_exceeded", "future_timestamp", "too_old", "late"] {
            rejected[reason] = CoreMetrics.Counter(label: "tally_agent_events_rejected_total", dimensions: [("reason", reason)], factory: factory)
        }
        rejectedByReason = rejected
        var refused: [Int: CoreMetrics.Counter] = [:]
        for status in [400, 413, 415, 429, 503] {
            refused[status] = CoreMetrics.Counter(
                label: "tally_agent_requests_refused_total", dimensions: [("status", String(status))], factory: factory)
        }
        refusedByStatus = refused
        spoolBytes = CoreMetrics.Gauge(label: "tally_agent_spool_bytes", factory: factory)
        spoolEvents = CoreMetrics.Gauge(label: "tally_agent_spool_events", factory: factory)
        spoolOldestAge = CoreMetrics.Gauge(label: "tally_agent_spool_oldest_age_seconds", factory: factory)
        batchesInFlight = CoreMetrics.Gauge(label: "tally_agent_batches_in_flight", factory: factory)
        batchesSent = CoreMetrics.Counter(label: "tally_agent_batches_sent_total", factory: factory)
        acksCommitted = CoreMetrics.Counter(label: "tally_agent_acks_total", dimensions: [("status", "committed")], factory: factory)
        acksMalformed = CoreMetrics.Counter(label: "tally_agent_acks_total", dimensions: [("status", "malformed")], factory: factory)
        var acked: [String: CoreMetrics.Counter] = [:]
        for outcome in ["accepted", "duplicate", "late", "rejected"] {
            acked[outcome] = CoreMetrics.Counter(label: "tally_agent_events_acked_total", dimensions: [("outcome", outcome)], factory: factory)
        }
        eventsAcked = acked
        reconnects = CoreMetrics.Counter(label: "tally_agent_reconnects_total", factory: factory)
        connected = CoreMetrics.Gauge(label: "tally_agent_connected", factory: factory)
        appendLatency = CoreMetrics.Timer(label: "tally_agent_spool_append_seconds", factory: factory)
        fsyncLatency = CoreMetrics.Timer(label: "tally_agent_spool_fsync_seconds", factory: factory)
        httpConnections = CoreMetrics.Meter(label: "tally_agent_http_connections", factory: factory)
        httpBodyBytesInFlight = CoreMetrics.Meter(label: "tally_agent_http_body_bytes_in_flight", factory: factory)
        httpRefusedConnections = CoreMetrics.Counter(label: "tally_agent_http_connections_refused_total", factory: factory)
        var timeouts: [HTTPConnectionClock.Phase: CoreMetrics.Counter] = [:]
        for phase in [HTTPConnectionClock.Phase.idle, .head, .body] {
            timeouts[phase] = CoreMetrics.Counter(label: "tally_agent_http_timeouts_total", dimensions: [("phase", phase.rawValue)], factory: factory)
        }
        httpTimeouts = timeouts
        checkpointFailures = CoreMetrics.Counter(label: "tally_agent_spool_checkpoint_failures_total", factory: factory)
        spoolWriteFailing = CoreMetrics.Gauge(label: "tally_agent_spool_write_failing", factory: factory)
        spoolMissingSegments = CoreMetrics.Gauge(label: "tally_agent_spool_missing_segments", factory: factory)
        spoolFilesystemAvailable = CoreMetrics.Gauge(label: "tally_agent_spool_filesystem_avail_bytes", factory: factory)
        spoolFilesystemSize = CoreMetrics.Gauge(label: "tally_agent_spool_filesystem_size_bytes", factory: factory)
    }

    func rejected(_ reason: String) { rejectedByReason[reason]?.increment() }
    func refused(status: Int) { refusedByStatus[status]?.increment() }

    /// The Prometheus text exposition of every metric.
    public func exposition() -> [UInt8] { registry.emitToBuffer() }
}
