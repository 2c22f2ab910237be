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
        for (_, band) in clampBands(of: config) { add(band.dimension) }
        return properties
    }

    /// The quantity bands the ledger keeps for percentage prices with a per-event minimum or
    /// maximum (``TallyPricing/PercentagePrice/clampBand``), with their metrics, in file order.
    public static func clampBands(of config: PricingConfig) -> [(metric: String, band: QuantityBand)] {
        var bands: [(metric: String, band: QuantityBand)] = []
        for plan in config.plans {
            for charge in plan.usageCharges {
                for price in charge.prices {
                    guard case .percentage(let percentage) = price.model, let band = percentage.clampBand else { continue }
                    if !bands.contains(where: { $0.metric == charge.metric && $0.band == band }) { bands.append((charge.metric, band)) }
                }
            }
        }
        return bands
    }

    /// Each metric's own group-by properties (``TallyLedger/LedgerConfiguration/metricGroupBy``):
    /// its group_by, its filters' properties, the price_by of any plan's charge for it, and the
    /// quantity band of any percentage price of it with a per-event minimum or maximum. A
    /// metric is aggregated by these only, not by every other metric's properties too.
    public static func ledgerMetricGroupBy(for config: PricingConfig) -> [String: [String]] {
        var byMetric: [String: [String]] = [:]
        func add(_ property: String, to metric: String) {
            if !(byMetric[metric] ?? []).contains(property) { byMetric[metric, default: []].append(property) }
        }
        for metric in config.metrics {
            byMetric[metric.name] = byMetric[metric.name] ?? []
            for property in metric.groupBy { add(property, to: metric.name) }
            for filter in metric.filters { add(filter.property, to: metric.name) }
        }
        for plan in config.plans {
            for charge in plan.usageCharges { if let property = charge.priceBy { add(property, to: charge.metric) } }
        }
        for (metric, band) in clampBands(of: config) { add(band.dimension, to: metric) }
        return byMetric
    }

    /// `base` with what this config needs aggregated: the group-by properties (each metric's
    /// own), the unique counts, the minimums of `min` metrics and the levels of `weighted_sum` ones.
    public static func ledgerConfiguration(for config: PricingConfig, base: LedgerConfiguration = LedgerConfiguration()) -> LedgerConfiguration {
        var configuration = base
        configuration.groupBy = ledgerGroupBy(for: config)
        configuration.metricGroupBy = ledgerMetricGroupBy(for: config)
        configuration.uniqueCounts = ledgerUniqueCounts(for: config)
        configuration.minimumMetrics = Set(config.metrics.filter { $0.aggregation == .min }.map(\.name))
        configuration.levelMetrics = Set(config.metrics.filter(\.aggregation.isLevel).map(\.name))
        return configuration
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

    /// The invoice of `tenant` for `period`, as the aggregates stand now (in a store, or in a
    /// period read that answers every read this invoice makes).
    public func invoice(store: any BillableUsageSource, tenant: String, period: BillingPeriod) throws(BillingError) -> Invoice {
        let usage = try segmentUsage(store: store, tenant: tenant, period: period, billing: .ownPeriod)
        var adjustments: [UsageAdjustment] = []
        let earlier: [BillingPeriod]
        do { earlier = try store.adjustedPeriods(tenant: tenant, billedIn: period) } catch { throw .ledger(error) }
        var originals = earlier.filter { $0 < period }.sorted()
        // A level set late holds until the series' next event, possibly through every period up
        // to this one: each of them may have changed, not only those holding its cells.
        if config.metrics.contains(where: \.aggregation.isLevel), let first = originals.first {
            originals = []
            var original = first
            while original < period {
                originals.append(original)
                original = original.next
            }
        }
        for original in originals {
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

    /// What a bulk read of `period` must hold to price every tenant of it (``invoice(_:store:)``)
    /// and show each metric's usage: every metric's totals, the cells of each charge's
    /// `price_by` or filter property, and the unique-count pairs.
    public func periodUsageQuery(period: BillingPeriod, search: String? = nil) -> PeriodUsageQuery {
        var kinds: [MetricDimension] = config.metrics.map { MetricDimension(metric: $0.name) }
        for metric in config.metrics {
            if let property = Self.filterProperty(of: metric) { kinds.append(MetricDimension(metric: metric.name, dimension: property)) }
        }
        for plan in config.plans {
            for charge in plan.usageCharges {
                guard let metric = config.metric(named: charge.metric) else { continue }
                let dimension = charge.priceBy ?? metric.filters.first?.property ?? ""
                let kind = MetricDimension(metric: metric.name, dimension: dimension)
                if !kinds.contains(kind) { kinds.append(kind) }
            }
        }
        for (metric, band) in Self.clampBands(of: config) {
            let kind = MetricDimension(metric: metric, dimension: band.dimension)
            if !kinds.contains(kind) { kinds.append(kind) }
        }
        return PeriodUsageQuery(period: period, cells: kinds, uniqueCounts: Self.ledgerUniqueCounts(for: config), search: search)
    }

    /// The invoice of a tenant of a bulk period read (``periodUsageQuery(period:search:)``):
    /// priced from the read's cells when one plan covers the whole period and no late usage of
    /// an earlier period is billed in it — nearly every tenant's month, and no statement at all
    /// — otherwise from `store`, as ``invoice(store:tenant:period:)``. The same invoice either way.
    public func invoice(_ usage: TenantPeriodUsage, store: any LedgerStore) throws(BillingError) -> Invoice {
        let period = usage.period
        let segments: [PlanSegment]
        do { segments = try engine.segments(tenant: usage.tenant, period: period) } catch { throw .pricing(error) }
        let onePlan = segments.count == 1 && segments.first?.start == period.start && segments.first?.end == period.end
        // A weighted_sum needs the level set before the period, which a period read does not hold.
        let levels = config.metrics.contains { $0.aggregation.isLevel }
        if onePlan && !usage.hasAdjustments && !levels { return try invoice(store: usage, tenant: usage.tenant, period: period) }
        return try invoice(store: store, tenant: usage.tenant, period: period)
    }

    /// A metric's usage in a period read as the pages show it: the events its filters let
    /// through, by event time, whatever period they are billed in; a unique count is the
    /// distinct values billed in the period itself; a weighted sum is the level's integral over
    /// the period as every event known now sets it (read from `store`).
    public func quantity(of metric: MetricDefinition, in usage: TenantPeriodUsage, store: any BillableUsageSource) throws(BillingError) -> Quantity {
        if case .weightedSum(let per) = metric.aggregation {
            return try Self.levelQuantity(
                store: store, tenant: usage.tenant, metric: metric.name, per: per,
                hours: usage.period.start.hourSinceEpoch..<usage.period.end.hourSinceEpoch, billing: .billedThrough(.last))
        }
        if case .uniqueCount(let property) = metric.aggregation {
            return Quantity(Int64(usage.distinctValues[UniqueCountKey(metric: metric.name, property: property)] ?? 0))
        }
        guard let property = Self.filterProperty(of: metric) else {
            let total: UsageAggregate?
            do { total = try usage.total(of: metric.name) } catch { throw .ledger(error) }
            return try total.map { (aggregate: UsageAggregate) throws(BillingError) in try Self.quantity(of: aggregate, metric.aggregation) } ?? .zero
        }
        var total: UsageAggregate?
        for cell in usage.cells where cell.metric == metric.name && cell.dimension == property {
            guard metric.matches(cell.value.isEmpty ? [:] : [property: cell.value]) else { continue }
            do { if total == nil { total = cell.aggregate } else { try total?.merge(cell.aggregate) } } catch { throw .ledger(error) }
        }
        return try total.map { (aggregate: UsageAggregate) throws(BillingError) in try Self.quantity(of: aggregate, metric.aggregation) } ?? .zero
    }

    /// The one property a metric's filters look at, whose aggregate cells say which events pass
    /// them; nil without filters, or with filters on several properties (which aggregates cannot
    /// answer: such a metric is shown unfiltered, and pricing it is refused).
    public static func filterProperty(of metric: MetricDefinition) -> String? {
        let properties = Set(metric.filters.map(\.property))
        return properties.count == 1 ? properties.first : nil
    }

    /// Usage per plan segment of `period`, as the engine wants it.
    func segmentUsage(
        store: any BillableUsageSource, tenant: String, period: BillingPeriod, billing: BillingSelection
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
            var bases: [UsageKey: PercentageBasis] = [:]
            for charge in plan.usageCharges {
                guard let metric = config.metric(named: charge.metric) else { continue }
                let values = try quantities(
                    store: store, tenant: tenant, metric: metric, priceBy: charge.priceBy, hours: hours, period: period,
                    billing: billing, lastSegment: index == segments.count - 1)
                for (value, quantity) in values { usage[UsageKey(metric: metric.name, propertyValue: value)] = quantity }
                let percentages = try percentageBases(store: store, tenant: tenant, metric: metric, charge: charge, hours: hours, billing: billing)
                for (value, basis) in percentages { bases[UsageKey(metric: metric.name, propertyValue: value)] = basis }
            }
            result.append(SegmentUsage(segment: segment, quantities: usage, percentageBases: bases))
        }
        return result
    }

    /// The integral of `metric`'s level over `hours`, in level × `per`, to 9 decimal places
    /// rounded half-even (``Aggregation/weightedSum(per:)``): the cells of `billing` before the
    /// range give the level it starts with, those in it the changes (``LevelIntegral``).
    public static func levelQuantity(
        store: any BillableUsageSource, tenant: String, metric: String, per: LevelTimeUnit, hours: Range<Int64>, billing: BillingSelection
    ) throws(BillingError) -> Quantity {
        guard !hours.isEmpty else { return .zero }
        do {
            let earliest = EventTime.acceptedRange.lowerBound.hourSinceEpoch
            let before = try store.billableAggregates(
                tenant: tenant, metric: metric, hours: earliest..<hours.lowerBound, dimension: "", billing: billing)[""]
            let within = try store.billableAggregates(tenant: tenant, metric: metric, hours: hours, dimension: "", billing: billing)[""]
            let integral = try LevelIntegral.integral(
                before: before, within: within, from: EventTime(startOfHour: hours.lowerBound), to: EventTime(startOfHour: hours.upperBound))
            return Quantity(nanos: LevelIntegral.dividedRoundingHalfEven(integral, by: per.microseconds))
        } catch {
            throw .ledger(error)
        }
    }

    /// Hours (since the epoch) whose start lies in `from ..< to`.
    static func hours(from: EventTime, to: EventTime) -> Range<Int64> {
        let lower = from.firstHourAtOrAfter
        return lower..<max(lower, to.firstHourAtOrAfter)
    }

    /// One metric's quantity in `hours`, per value of `priceBy` (a single nil key when unsplit).
    private func quantities(
        store: any BillableUsageSource, tenant: String, metric: MetricDefinition, priceBy: String?, hours: Range<Int64>,
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
        if case .weightedSum(let per) = metric.aggregation {
            if priceBy != nil || !filterProperties.isEmpty {
                throw .unsupported("weighted_sum metric '\(metric.name)' cannot be priced by or filtered on a property")
            }
            // The level's own period sees every event billed through it: a late event of an
            // earlier period, billed here, sets the level this period starts with.
            let levelBilling: BillingSelection = billing == .ownPeriod ? .billedThrough(period) : billing
            return [nil: try Self.levelQuantity(store: store, tenant: tenant, metric: metric.name, per: per, hours: hours, billing: levelBilling)]
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
        var result: [String?: Quantity] = [:]
        let groups = try groupAggregates(store: store, tenant: tenant, metric: metric, priceBy: priceBy, hours: hours, billing: billing)
        for (key, aggregate) in groups { result[key] = try Self.quantity(of: aggregate, metric.aggregation) }
        if priceBy == nil && result.isEmpty { result[nil] = .zero }
        return result
    }

    /// One metric's aggregate in `hours`, merged per value of `priceBy` (a single nil key when
    /// unsplit), of the events its filters let through. Empty without events.
    private func groupAggregates(
        store: any BillableUsageSource, tenant: String, metric: MetricDefinition, priceBy: String?, hours: Range<Int64>,
        billing: BillingSelection
    ) throws(BillingError) -> [String?: UsageAggregate] {
        let filterProperties = Set(metric.filters.map(\.property))
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
        return groups
    }

    /// What each percentage-priced key of `charge` is made of (``PercentageBasis``): without a
    /// per-event minimum or maximum, each group's sum and count; with them (one price, no
    /// price_by, no filters: the loader allows no other), the cells of the price's band
    /// dimension (``PercentagePrice/clampBand``), which the ledger keeps for it.
    private func percentageBases(
        store: any BillableUsageSource, tenant: String, metric: MetricDefinition, charge: UsageCharge, hours: Range<Int64>,
        billing: BillingSelection
    ) throws(BillingError) -> [String?: PercentageBasis] {
        let percentages = charge.prices.compactMap { price -> PercentagePrice? in
            if case .percentage(let percentage) = price.model { percentage } else { nil }
        }
        guard !percentages.isEmpty else { return [:] }
        guard let clamped = percentages.first(where: \.clamps) else {
            let groups = try groupAggregates(store: store, tenant: tenant, metric: metric, priceBy: charge.priceBy, hours: hours, billing: billing)
            return groups.mapValues { PercentageBasis(chargedQuantity: $0.sum, chargedEvents: $0.count) }
        }
        guard charge.priceBy == nil, charge.prices.count == 1, metric.filters.isEmpty, let band = clamped.clampBand else {
            throw .unsupported(
                "metric '\(metric.name)' has a percentage price with a per-event minimum or maximum and a price_by, filters or bounds out of range; aggregates cannot answer it"
            )
        }
        let cells: [String: UsageAggregate]
        do {
            cells = try store.billableAggregates(tenant: tenant, metric: metric.name, hours: hours, dimension: band.dimension, billing: billing)
        } catch {
            throw .ledger(error)
        }
        for value in cells.keys where ![QuantityBand.within, QuantityBand.below, QuantityBand.above].contains(value) {
            throw .ledger(.corruptRow("\(metric.name) \(band.dimension) cell of value '\(value)'"))
        }
        var basis = PercentageBasis()
        do throws(ArithmeticOverflow) {
            for (value, aggregate) in cells {
                switch value {
                case QuantityBand.within:
                    basis = try basis.adding(PercentageBasis(chargedQuantity: aggregate.sum, chargedEvents: aggregate.count))
                case QuantityBand.below: basis = try basis.adding(PercentageBasis(eventsAtMinimum: aggregate.count))
                default: basis = try basis.adding(PercentageBasis(eventsAtMaximum: aggregate.count))
                }
            }
        } catch {
            throw .ledger(.quantityOverflow("the percentage basis of \(metric.name): \(error)"))
        }
        return [nil: basis]
    }

    /// The number an aggregation takes from an aggregate cell: for `avg`, the exact sum over
    /// the count to 9 decimal places, half-even (``TallyLedger/UsageAggregate/average``). A
    /// minimum that was not recorded (cells written before Tally kept them) is refused, never
    /// guessed.
    static func quantity(of aggregate: UsageAggregate, _ aggregation: Aggregation) throws(BillingError) -> Quantity {
        switch aggregation {
        case .weightedSum:
            throw .unsupported("a weighted_sum is a level's integral over time: it is read over a range of hours (levelQuantity), not from one cell")
        case .sum: return aggregate.sum
        case .count: return Quantity(aggregate.count)
        case .max: return aggregate.max
        case .latest: return aggregate.latest.quantity
        case .uniqueCount: return Quantity(aggregate.count)
        case .average: return aggregate.average
        case .min:
            guard let minimum = aggregate.min else {
                throw .unsupported(
                    "the minimum of these events was not recorded: some were aggregated before Tally kept minimums (SQLite schema 4, PostgreSQL migration 7)"
                )
            }
            return minimum
        }
    }
}
