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
        var factory = PrometheusMetricsFactory(registry: registry)
        // From 100 µs: the collector's usage reads answer in well under the library's first
        // bucket (5 ms), and its commits often do too.
        factory.defaultDurationHistogramBuckets = [
            .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5),
            .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500),
            .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10),
        ]
        MetricsSystem.bootstrap(factory)
        var logger = Logger(label: label)
        logger.logLevel = logLevel
        return (logger, registry)
    }
}
