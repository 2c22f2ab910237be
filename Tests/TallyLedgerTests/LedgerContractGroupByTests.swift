import TallyCore
@testable import TallyLedger
import Testing

/// Each metric is aggregated by its own group-by properties (``LedgerConfiguration/metricGroupBy``),
/// on every backend: no cells of another metric's dimensions, a usage read by a dimension the
/// metric does not have is refused, and the audit recomputes the same cells — also for a ledger
/// written when every metric had every dimension.
@Suite struct LedgerContractGroupByTests {
    static var perMetric: LedgerConfiguration {
        var configuration = LedgerConfiguration(groupBy: ["endpoint", "region"])
        configuration.metricGroupBy = ["api_calls": ["endpoint", "region"], "bytes_out": ["region"], "exports": []]
        return configuration
    }

    static let events = [
        event(quantity: "2", at: "2026-04-13T10:00:00Z", id: "c1", [("endpoint", "/a"), ("region", "eu")]),
        event(quantity: "3", at: "2026-04-13T10:30:00Z", id: "c2", [("endpoint", "/b"), ("region", "us")]),
        event("acme", "bytes_out", quantity: "100", at: "2026-04-13T10:00:00Z", id: "b1", [("endpoint", "/a"), ("region", "eu")]),
        event("acme", "exports", quantity: "1", at: "2026-04-13T11:00:00Z", id: "x1", [("endpoint", "/a"), ("region", "eu")]),
        // A metric the configuration does not name: every dimension, as before.
        event("acme", "other", quantity: "1", at: "2026-04-13T11:00:00Z", id: "o1", [("endpoint", "/a"), ("region", "eu")]),
    ]

    func dimensions(_ store: any LedgerStore) throws -> [String: Set<String>] {
        var found: [String: Set<String>] = [:]
        for key in try store.storedAggregates(tenant: "acme", period: period("2026-04")).keys {
            found[key.metric, default: []].formUnion(key.dimension.isEmpty ? [] : [key.dimension])
        }
        return found
    }

    @Test(arguments: ledgerFactories)
    func eachMetricHasOnlyItsOwnDimensions(_ factory: any LedgerStoreFactory) throws {
        let ledger = try TestLedger(factory, configuration: Self.perMetric)
        _ = try ledger.store.commit(batch(1, Self.events))
        #expect(
            try dimensions(ledger.store) == [
                "api_calls": ["endpoint", "region"], "bytes_out": ["region"], "exports": [], "other": ["endpoint", "region"],
            ])
        let window = (from: at("2026-04-13T00:00:00Z"), to: at("2026-04-14T00:00:00Z"))
        let byRegion = try ledger.store.usage(
            UsageQuery(tenant: "acme", metric: "bytes_out", from: window.from, to: window.to, granularity: .day, groupBy: "region"))
        #expect(byRegion.map { $0.group } == ["eu"])
        let refused = #expect(throws: LedgerError.self) {
            try ledger.store.usage(
                UsageQuery(tenant: "acme", metric: "bytes_out", from: window.from, to: window.to, granularity: .day, groupBy: "endpoint"))
        }
        #expect("\(refused.map { "\($0)" } ?? "")".contains("not a configured group-by property of bytes_out"))
        let byEndpoint = try ledger.store.usage(
            UsageQuery(tenant: "acme", metric: "api_calls", from: window.from, to: window.to, granularity: .day, groupBy: "endpoint"))
        #expect(byEndpoint.map { $0.group } == ["/a", "/b"])
        let drift = try ledger.store.recomputeAggregates(tenant: "acme", period: period("2026-04"))
        #expect(drift.differences.isEmpty && drift.cellsCompared > 0, "\(drift)")
    }

    /// A ledger written when every metric had every dimension, opened with per-metric group-by:
    /// the extra cells are left alone, the audit finds no drift, and new batches write only the
    /// metric's own dimensions.
    @Test(arguments: ledgerFactories)
    func aLedgerWrittenWithEveryDimensionAuditsCleanPerMetric(_ factory: any LedgerStoreFactory) throws {
        let ledger = try TestLedger(factory, configuration: LedgerConfiguration(groupBy: ["endpoint", "region"]))
        _ = try ledger.store.commit(batch(1, Self.events))
        #expect(try dimensions(ledger.store)["exports"] == ["endpoint", "region"])
        let reopened = try factory.open(ledger.location, configuration: Self.perMetric)
        defer { reopened.close() }
        let drift = try reopened.recomputeAggregates(tenant: "acme", period: period("2026-04"))
        #expect(drift.differences.isEmpty, "\(drift)")
        _ = try reopened.commit(
            batch(2, [event("acme", "exports", quantity: "1", at: "2026-04-13T12:00:00Z", id: "x2", [("endpoint", "/c"), ("region", "ap")])]))
        let cells = try reopened.storedAggregates(tenant: "acme", period: period("2026-04")).keys.filter { $0.metric == "exports" }
        #expect(!cells.contains { $0.value == "/c" || $0.value == "ap" })
        #expect(try reopened.recomputeAggregates(tenant: "acme", period: period("2026-04")).differences.isEmpty)
    }

    @Test func aMetricsPropertyMustBeOneOfTheLedgers() {
        var configuration = LedgerConfiguration(groupBy: ["region"])
        configuration.metricGroupBy = ["api_calls": ["endpoint"]]
        let error = #expect(throws: LedgerError.self) { try configuration.validate() }
        #expect("\(error.map { "\($0)" } ?? "")".contains("'endpoint' of api_calls is not one of the ledger's"))
        configuration.metricGroupBy = ["api_calls": ["region"]]
        #expect(throws: Never.self) { try configuration.validate() }
        #expect(configuration.groupBy(of: "api_calls") == ["region"] && configuration.groupBy(of: "unnamed") == ["region"])
    }
}
