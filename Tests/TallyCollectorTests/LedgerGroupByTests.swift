import Foundation
import Testing
import TallyLedger
import TallyPricing
@testable import TallyCollector

/// What a collector with a pricing file aggregates: each metric by its own group_by, filter and
/// price_by properties, so `bytes_out` pays for no `endpoint` cells.
@Suite struct LedgerGroupByTests {
    @Test func eachMetricIsAggregatedByWhatItsPricesAndPagesNeed() throws {
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("deploy/pricing.example.yaml").path
        let config = try PricingConfigLoader.load(file: path)
        let ledger = AggregatePricing.ledgerConfiguration(for: config)
        // api_calls: group_by endpoint, region (pro prices it by endpoint too); bytes_out: region;
        // compute_ms: region (eu-business prices it by region); exports: its filter's status, which
        // is in no metric's group_by (the pricing loader requires a price_by there).
        #expect(
            ledger.metricGroupBy == ["api_calls": ["endpoint", "region"], "bytes_out": ["region"], "compute_ms": ["region"], "exports": ["status"]])
        #expect(ledger.groupBy == ["endpoint", "region", "status"])
        #expect(throws: Never.self) { try ledger.validate() }
        // The collector's ledger is configured the same way.
        var collector = CollectorConfig()
        collector.pricingFile = path
        #expect(collector.ledgerConfiguration(pricing: AggregatePricing(config: config)).metricGroupBy == ledger.metricGroupBy)
    }
}
