package import Logging
import Metrics
package import Prometheus

/// The one place the binaries bootstrap logging (stderr) and metrics (a Prometheus registry
/// served on their HTTP port). Libraries only take a `Logger` and use swift-metrics.
package enum Observability {
    package static func bootstrap(label: String, level: LogLevelName) -> (Logger, PrometheusCollectorRegistry) {
        let logLevel = Logger.Level(rawValue: level.rawValue) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = logLevel
            return handler
        }
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        var logger = Logger(label: label)
        logger.logLevel = logLevel
        return (logger, registry)
    }
}
