public import TallyCore

/// Why usage could not be priced. Nothing is ever priced partially or silently skipped: every
/// case names the tenant, metric or segment concerned.
public enum PricingError: Error, Sendable, Hashable, CustomStringConvertible {
    /// No assignment covers the instant and there is no default plan.
    case noPlan(tenant: String, at: EventTime)
    /// Usage names a metric the config does not define.
    case unknownMetric(String)
    /// The plan prices the metric by a property, but the usage is not split by it.
    case usageNotSplit(metric: String, property: String)
    /// The usage is split by a property value, but the plan prices the metric as a whole.
    case unexpectedPropertyValue(metric: String, value: String)
    /// The plan prices the metric by a property and has no price for this value and no fallback.
    case unpricedValue(metric: String, property: String, value: String)
    /// Usage must not be negative.
    case negativeUsage(metric: String, quantity: Quantity)
    /// The usage given does not match the period's plan segments.
    case segmentMismatch(String)
    /// The plans of one invoice (its segments and adjustments) use different currencies.
    case currencyMismatch(tenant: String, Currency, Currency)
    /// An exact amount or quantity left the 128-bit range.
    case overflow(context: String, detail: String)

    public var description: String {
        switch self {
        case .noPlan(let tenant, let time):
            "tenant '\(tenant)' has no plan at \(time): no assignment covers it and there is no default plan"
        case .unknownMetric(let metric): "usage of unknown metric '\(metric)'"
        case .usageNotSplit(let metric, let property):
            "the plan prices '\(metric)' by '\(property)'; give its usage per value of '\(property)'"
        case .unexpectedPropertyValue(let metric, let value):
            "usage of '\(metric)' is given for the value '\(value)', but the plan prices '\(metric)' as a whole"
        case .unpricedValue(let metric, let property, let value):
            "the plan has no price for '\(metric)' with \(property) '\(value)' and no price for other values"
        case .negativeUsage(let metric, let quantity): "usage of '\(metric)' is negative (\(quantity))"
        case .segmentMismatch(let problem): "usage does not match the plan segments: \(problem)"
        case .currencyMismatch(let tenant, let a, let b):
            "tenant '\(tenant)' would be invoiced in both \(a) and \(b) on one invoice"
        case .overflow(let context, let detail): "amount out of range while pricing \(context): \(detail)"
        }
    }
}
