import Foundation
public import Logging
public import Metrics
public import TallyConfig
public import ServiceLifecycle
import TallyCore
public import TallyTLS

/// The collector's `exports:` section: where to push usage as Stripe meter events, with which
/// key, how often, and which metrics under which meter names.
public struct ExportsConfig: Sendable, Hashable {
    /// Where the API key comes from. The key itself is read when the collector starts and is
    /// never logged.
    public enum KeySource: Sendable, Hashable {
        /// An environment variable's value.
        case environment(String)
        /// A file's contents, without the trailing line break.
        case file(String)
    }

    /// e.g. `https://api.stripe.com`.
    public var baseURL: String
    public var apiKey: KeySource?
    /// The time between two runs (the first runs at start).
    public var every: Duration = .seconds(3_600)
    /// metric -> meter event name; empty: every additive metric under its own name.
    public var meters: [String: String] = [:]
    /// tenant -> the platform's customer id; a tenant not listed is sent under its own name.
    public var customers: [String: String] = [:]
    public var maxAttempts = 5
    public var requestTimeout: Duration = .seconds(30)
    public var initialBackoff: Duration = .milliseconds(500)
    public var maxBackoff: Duration = .seconds(30)

    public init(baseURL: String) { self.baseURL = baseURL }

    /// The key, read now from its source (`environment`: this process's when nil).
    public func resolveAPIKey(environment: [String: String]? = nil) throws(ConfigError) -> String? {
        let environment = environment ?? ProcessInfo.processInfo.environment
        switch apiKey {
        case nil: return nil
        case .environment(let name):
            guard let value = environment[name], !value.isEmpty else {
                throw ConfigError(
                    file: "<environment>", issues: [ConfigIssue(place: "exports.api_key_env", problem: "the variable \(name) is not set")])
            }
            return value
        case .file(let path):
            let text = try ConfigDocument.text(ofFile: path)
            let key = text.trimmingCharacters(in: .whitespacesAndNewlines)
            guard !key.isEmpty else {
                throw ConfigError(file: path, issues: [ConfigIssue(place: "exports.api_key_file", problem: "the file is empty")])
            }
            return key
        }
    }

    /// The exporter's settings, with the key read.
    public func settings(apiKey: String?, tls: ClientTLS? = nil, allowPlaintextRemote: Bool = false) -> MeterEventExporter.Settings {
        MeterEventExporter.Settings(
            baseURL: baseURL, apiKey: apiKey, customers: customers, maxAttempts: maxAttempts, initialBackoff: initialBackoff,
            maxBackoff: maxBackoff, tls: tls, allowPlaintextRemote: allowPlaintextRemote, requestTimeout: requestTimeout, meters: meters)
    }
}

/// Pushes usage to the billing platform on a schedule: at start and then every
/// ``ExportsConfig/every``, the closed hours of the previous and the current billing period
/// (``MeterEventExporter``: each hour's difference since what was already recorded, under
/// identifiers that stay the same on a resend, so neither a retry, a restart nor a second
/// collector sends anything twice). A failed run (platform or ledger away) is logged and its
/// records are retried at the next run. A graceful shutdown ends a run at once; what it had
/// not delivered goes out after the restart.
///
/// Metrics: `tally_collector_export_records_total{outcome="sent"|"failed"}` (records delivered,
/// and records still undelivered at the end of a run), `tally_collector_export_requests_total`
/// (HTTP requests, retries included) and `tally_collector_export_runs_failed_total` (runs that
/// stopped on an error, e.g. the ledger away).
public struct ScheduledExports: Service {
    let exporter: MeterEventExporter
    let every: Duration
    let logger: Logger
    let sent: Counter
    let failed: Counter
    let requests: Counter
    let failedRuns: Counter

    public init(exporter: MeterEventExporter, every: Duration, logger: Logger, metrics: any MetricsFactory = MetricsSystem.factory) {
        self.exporter = exporter
        self.every = every
        self.logger = logger
        sent = Counter(label: "tally_collector_export_records_total", dimensions: [("outcome", "sent")], factory: metrics)
        failed = Counter(label: "tally_collector_export_records_total", dimensions: [("outcome", "failed")], factory: metrics)
        requests = Counter(label: "tally_collector_export_requests_total", factory: metrics)
        failedRuns = Counter(label: "tally_collector_export_runs_failed_total", factory: metrics)
    }

    /// One run, now: the previous period's and the current period's closed hours.
    public func runOnce() async throws(BillingError) -> MeterEventExporter.Report {
        let now = exporter.service.clock()
        let current = BillingPeriod(containing: now)
        var total = MeterEventExporter.Report()
        for period in [current.previous, current] {
            let report = try await exporter.export(period: period, now: now)
            total.sent += report.sent
            total.alreadySent += report.alreadySent
            total.failed += report.failed
            total.requests += report.requests
            sent.increment(by: report.sent)
            failed.increment(by: report.failed)
            requests.increment(by: report.requests)
        }
        return total
    }

    public func run() async throws {
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                // A shutdown stops a run between two attempts: what was not acknowledged stays
                // pending in the ledger and goes out, under the same identifier, after the restart.
                let report = try await cancelWhenGracefulShutdown { try await runOnce() }
                if report.sent > 0 || report.failed > 0 {
                    logger.info(
                        "exported usage", metadata: ["sent": "\(report.sent)", "failed": "\(report.failed)", "requests": "\(report.requests)"])
                }
            } catch {
                if Task.isCancelled || Task.isShuttingDownGracefully { return }
                failedRuns.increment()
                logger.error("exporting usage failed; retrying at the next run", metadata: ["error": "\(error)"])
            }
            do {
                try await cancelWhenGracefulShutdown { try await Task.sleep(for: every) }
            } catch {
                return
            }
        }
    }
}
