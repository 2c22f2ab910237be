import TallyAgent
import TallyCollector
import TallyCore
import TallyPricing

/// Config files are read as UTF-8 text (`readTextFile` refuses anything else), so only text
/// reaches the loaders.
private func text(_ bytes: UnsafeRawBufferPointer) -> String? {
    String(validating: bytes, as: UTF8.self)
}

/// The pricing YAML loader, then the pricing engine on every config it accepts: a config that
/// loads must price any usage with an invoice or a ``PricingError``, never a trap.
public func fuzzPricingConfig(_ bytes: UnsafeRawBufferPointer) {
    guard let yaml = text(bytes), let config = try? PricingConfigLoader.load(yaml: yaml) else { return }
    let engine = PricingEngine(config: config)
    guard let period = BillingPeriod(year: 2026, month: 4) else { return }
    // A few quantities: none, a fraction, a usual amount, and one near the top of the range.
    let amounts = [Quantity.zero, Quantity(nanos: 1), Quantity(nanos: 1_234_567_000_000_000), Quantity(nanos: Int128(Int64.max) << 40)]
    let tenants = Set(config.assignments.prefix(4).map(\.tenant)).union(["fuzz-tenant"]).sorted()
    for tenant in tenants {
        guard let segments = try? engine.segments(tenant: tenant, period: period) else { continue }
        for amount in amounts {
            var usage: [UsageKey: Quantity] = [:]
            for metric in config.metrics { usage[UsageKey(metric: metric.name)] = amount }
            let perSegment = segments.map { SegmentUsage(segment: $0, quantities: usage) }
            _ = try? engine.invoice(tenant: tenant, period: period, usage: perSegment)
        }
    }
}

/// The agent's YAML config loader and its whole-config validation.
public func fuzzAgentConfig(_ bytes: UnsafeRawBufferPointer) {
    guard let yaml = text(bytes), let config = try? AgentConfig.load(yaml: yaml) else { return }
    _ = try? config.validate()
}

/// The collector's YAML config loader and its whole-config validation.
public func fuzzCollectorConfig(_ bytes: UnsafeRawBufferPointer) {
    guard let yaml = text(bytes), let config = try? CollectorConfig.load(yaml: yaml) else { return }
    _ = try? config.validate()
}
