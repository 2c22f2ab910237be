public import TallyCore
public import TallyLedger
public import TallyPricing

/// Prices a tenant's period from the hourly aggregates, never from raw events: usage per plan
/// segment (each segment takes the hours that start in it), grouped by the charge's `price_by`
/// property, then adjustment lines for late usage of closed periods billed in this period.
///
/// Metric filters are applied to the aggregate groups of the filtered property, so a filtered
/// metric needs that property in the ledger's group-by list (``ledgerGroupBy(for:)`` sets it).
/// A metric with filters on two properties, or priced by one property and filtered by another,
/// cannot be answered from one-dimension aggregates and is refused with a clear error.
public struct AggregatePricing: Sendable {
    public let config: PricingConfig
    public let engine: PricingEngine

    public init(config: PricingConfig) {
        self.config = config
        self.engine = PricingEngine(config: config)
    }

    /// The ledger group-by properties this config needs: every metric's group_by, price_by and
    /// filter properties.
    public static func ledgerGroupBy(for config: PricingConfig) -> [String] {
        var properties: [String] = []
        func add(_ property: String) { if !properties.contains(property) { properties.append(property) } }
        for metric in config.metrics {
            metric.groupBy.forEach(add)
            metric.filters.map(\.property).forEach(add)
        }
        for plan in config.plans { for charge in plan.usageCharges { charge.priceBy.map(add) } }
        return properties
    }

    /// The unique-count pairs this config needs counted by the ledger.
    public static func ledgerUniqueCounts(for config: PricingConfig) -> [UniqueCountKey] {
        config.metrics.compactMap { metric in
            if case .uniqueCount(let property) = metric.aggregation { UniqueCountKey(metric: metric.name, property: property) } else { nil }
        }
    }

    /// Whether a plan assignment names `tenant` (at any time): such a tenant is billed even
    /// before it sends an event. The default plan names no one.
    public func assigns(tenant: String) -> Bool {
        config.assignments.contains { $0.tenant == tenant }
    }

    /// Tenants a plan assignment names for some part of `period` (they owe its fees even
    /// without events).
    public func assignedTenants(during period: BillingPeriod) -> Set<String> {
        Set(config.assignments.filter { $0.from < period.end && ($0.until.map { $0 > period.start } ?? true) }.map(\.tenant))
    }

    /// The invoice of `tenant` for `period`, as the aggregates stand now.
    public func invoice(store: any LedgerStore, tenant: String, period: BillingPeriod) throws(BillingError) -> Invoice {
        let usage = try segmentUsage(store: store, tenant: tenant, period: period, billing: .ownPeriod)
        var adjustments: [UsageAdjustment] = []
        let earlier: [BillingPeriod]
        do { earlier = try store.adjustedPeriods(tenant: tenant, billedIn: period) } catch { throw .ledger(error) }
        for original in earlier where original < period {
            let billed = try segmentUsage(store: store, tenant: tenant, period: original, billing: .billedBefore(period))
            let corrected = try segmentUsage(store: store, tenant: tenant, period: original, billing: .billedThrough(period))
            adjustments.append(UsageAdjustment(originalPeriod: original, billed: billed, corrected: corrected))
        }
        do {
            return try engine.invoice(tenant: tenant, period: period, usage: usage, adjustments: adjustments)
        } catch {
            throw .pricing(error)
        }
    }

    /// Usage per plan segment of `period`, as the engine wants it.
    func segmentUsage(
        store: any LedgerStore, tenant: String, period: BillingPeriod, billing: BillingSelection
    ) throws(BillingError)
        -> [SegmentUsage]
    {
        let segments: [PlanSegment]
        do { segments = try engine.segments(tenant: tenant, period: period) } catch { throw .pricing(error) }
        var result: [SegmentUsage] = []
        for (index, segment) in segments.enumerated() {
            guard let plan = config.plan(id: segment.planID) else { throw .pricingConfig("plan '\(segment.planID)' is not defined") }
            let hours = Self.hours(from: segment.start, to: segment.end)
            var usage: [UsageKey: Quantity] = [:]
            for charge in plan.usageCharges {
                guard let metric = config.metric(named: charge.metric) else { continue }
                let values = try quantities(
                    store: store, tenant: tenant, metric: metric, priceBy: charge.priceBy, hours: hours, period: period,
                    billing: billing, lastSegment: index == segments.count - 1)
                for (value, quantity) in values { usage[UsageKey(metric: metric.name, propertyValue: value)] = quantity }
            }
            result.append(SegmentUsage(segment: segment, quantities: usage))
        }
        return result
    }

    /// Hours (since the epoch) whose start lies in `from ..< to`.
    static func hours(from: EventTime, to: EventTime) -> Range<Int64> {
        let lower = from.firstHourAtOrAfter
        return lower..<max(lower, to.firstHourAtOrAfter)
    }

    /// One metric's quantity in `hours`, per value of `priceBy` (a single nil key when unsplit).
    private func quantities(
        store: any LedgerStore, tenant: String, metric: MetricDefinition, priceBy: String?, hours: Range<Int64>,
        period: BillingPeriod, billing: BillingSelection, lastSegment: Bool
    ) throws(BillingError) -> [String?: Quantity] {
        let filterProperties = Set(metric.filters.map(\.property))
        if filterProperties.count > 1 {
            throw .unsupported(
                "metric '\(metric.name)' filters on several properties (\(filterProperties.sorted())); aggregates keep one dimension per row")
        }
        if let filtered = filterProperties.first, let priceBy, filtered != priceBy {
            throw .unsupported("metric '\(metric.name)' is priced by '\(priceBy)' and filtered by '\(filtered)'")
        }
        if case .uniqueCount(let property) = metric.aggregation {
            if priceBy != nil || !filterProperties.isEmpty {
                throw .unsupported("unique_count metric '\(metric.name)' cannot be priced by or filtered on a property")
            }
            // Distinct values are counted per period: the whole count goes to the last segment.
            guard lastSegment else { return [nil: .zero] }
            let through: BillingPeriod
            switch billing {
            case .ownPeriod: through = period
            case .adjustmentsIn(let billed), .billedThrough(let billed): through = billed
            case .billedBefore(let billed): through = billed.previous
            }
            do {
                let count = try store.distinctValues(tenant: tenant, metric: metric.name, property: property, period: period, billedThrough: through)
                return [nil: Quantity(Int64(count))]
            } catch {
                throw .ledger(error)
            }
        }
        let dimension = priceBy ?? filterProperties.first ?? ""
        let cells: [String: UsageAggregate]
        do {
            cells = try store.billableAggregates(tenant: tenant, metric: metric.name, hours: hours, dimension: dimension, billing: billing)
        } catch {
            throw .ledger(error)
        }
        var groups: [String?: UsageAggregate] = [:]
        for (value, aggregate) in cells {
            if !metric.filters.isEmpty, !metric.matches(value.isEmpty ? [:] : [dimension: value]) { continue }
            let key: String? = priceBy == nil ? nil : value
            do {
                if var existing = groups[key] {
                    try existing.merge(aggregate)
                    groups[key] = existing
                } else {
                    groups[key] = aggregate
                }
            } catch {
                throw .ledger(error)
            }
        }
        var result: [String?: Quantity] = [:]
        for (key, aggregate) in groups { result[key] = Self.quantity(of: aggregate, metric.aggregation) }
        if priceBy == nil && result.isEmpty { result[nil] = .zero }
        return result
    }

    /// The number an aggregation takes from an aggregate cell.
    static func quantity(of aggregate: UsageAggregate, _ aggregation: Aggregation) -> Quantity {
        switch aggregation {
        case .sum: aggregate.sum
        case .count: Quantity(aggregate.count)
        case .max: aggregate.max
        case .latest: aggregate.latest.quantity
        case .uniqueCount: Quantity(aggregate.count)
        }
    }
}
