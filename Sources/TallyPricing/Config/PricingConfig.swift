public import TallyCore

/// A validated pricing configuration: metrics, plans and tenant-to-plan assignments.
///
/// A value of this type exists only after every check in ``PricingConfigLoader`` passed: every
/// charge names a defined metric, tiers increase and end open, currencies are known, a tenant's
/// assignments never overlap, and every plan reference resolves. Pricing with it is pure.
public struct PricingConfig: Sendable, Hashable {
    /// Metric definitions, in file order.
    public let metrics: [MetricDefinition]
    /// Plans, in file order.
    public let plans: [Plan]
    /// Tenant-to-plan assignments, in file order.
    public let assignments: [PlanAssignment]
    /// The plan of a tenant at an instant no assignment covers; nil means such usage is an error.
    public let defaultPlanID: String?
    /// Usage alert thresholds, in file order (`alerts:`).
    public let alerts: [UsageAlertRule]

    public init(
        metrics: [MetricDefinition], plans: [Plan], assignments: [PlanAssignment], defaultPlanID: String?, alerts: [UsageAlertRule] = []
    ) {
        self.metrics = metrics
        self.plans = plans
        self.assignments = assignments
        self.defaultPlanID = defaultPlanID
        self.alerts = alerts
    }

    public func metric(named name: String) -> MetricDefinition? { metrics.first { $0.name == name } }

    public func plan(id: String) -> Plan? { plans.first { $0.id == id } }
}

/// How a metric's events become one number per tenant and period.
public enum Aggregation: Sendable, Hashable, CustomStringConvertible {
    /// The sum of the events' quantities.
    case sum
    /// The number of events.
    case count
    /// The largest quantity.
    case max
    /// The number of distinct values of a property.
    case uniqueCount(property: String)
    /// The quantity of the latest event (by event time).
    case latest
    /// The smallest quantity (zero for no events).
    case min
    /// The mean quantity: the exact sum divided by the number of events, to 9 decimal places
    /// (``Quantity``'s nano-units), rounded half-even (zero for no events). `avg` in the file.
    case average
    /// A level held over time (seats, stored GB): each event sets the level of its tenant's
    /// series from its timestamp until the next event (zero before the first), and the usage is
    /// the level's exact time integral over the period (or plan segment), in level × `per`
    /// (GB-hours for `per: hour`), to 9 decimal places, rounded half-even. Time is in
    /// microseconds, as events carry it. A level set before the period holds into it; the
    /// integral of an open period runs to its end as the levels stand (a draft projects the
    /// current level). `weighted_sum` in the file.
    case weightedSum(per: LevelTimeUnit)

    /// Whether usage of two time ranges adds up to the usage of both (sum, count). Only additive
    /// metrics carry tier positions across a plan change inside a period.
    public var isAdditive: Bool {
        switch self {
        case .sum, .count, .weightedSum: true
        case .max, .uniqueCount, .latest, .min, .average: false
        }
    }

    public var description: String {
        switch self {
        case .sum: "sum"
        case .count: "count"
        case .max: "max"
        case .uniqueCount(let property): "unique_count(\(property))"
        case .latest: "latest"
        case .min: "min"
        case .average: "avg"
        case .weightedSum(let per): "weighted_sum(per \(per.rawValue))"
        }
    }

    /// Whether events set a level held until the next one (``weightedSum(per:)``).
    public var isLevel: Bool {
        if case .weightedSum = self { true } else { false }
    }
}

/// The time unit a `weighted_sum` is counted in (`per:` in the file).
public enum LevelTimeUnit: String, Sendable, Hashable, CaseIterable {
    case second, minute, hour, day

    /// Its length in microseconds.
    public var microseconds: Int128 {
        switch self {
        case .second: 1_000_000
        case .minute: 60_000_000
        case .hour: 3_600_000_000
        case .day: 86_400_000_000
        }
    }
}

/// A condition on one event property: the event counts toward the metric only when the
/// property's value is (or, for `excluded`, is not) one of `values`. A missing property matches
/// no `in` filter and every `not_in` filter.
public struct MetricFilter: Sendable, Hashable {
    public let property: String
    public let values: Set<String>
    /// true for `in`, false for `not_in`.
    public let included: Bool

    public init(property: String, values: Set<String>, included: Bool) {
        self.property = property
        self.values = values
        self.included = included
    }

    public func matches(_ properties: [String: String]) -> Bool {
        guard let value = properties[property] else { return !included }
        return values.contains(value) == included
    }
}

/// A billable metric: which events count (name and filters), how they aggregate, and which
/// properties the aggregates keep (group-by), so prices can differ by a property's value.
public struct MetricDefinition: Sendable, Hashable {
    public let name: String
    public let aggregation: Aggregation
    public let groupBy: [String]
    public let filters: [MetricFilter]
    /// How a person reads the quantity (`unit:` in the file): `bytes` is shown in KB, MB, GB;
    /// any other unit (`ms`, `calls`) is shown after the number; nil shows the number alone.
    /// Display only: pricing never looks at it.
    public let unit: String?

    public init(name: String, aggregation: Aggregation, groupBy: [String] = [], filters: [MetricFilter] = [], unit: String? = nil) {
        self.name = name
        self.aggregation = aggregation
        self.groupBy = groupBy
        self.filters = filters
        self.unit = unit
    }

    /// How a person reads a quantity of this metric: ``unit``, or for a `weighted_sum` the unit
    /// times its time unit (`GB-hours`, `level-days` without a unit).
    public var displayUnit: String? {
        guard case .weightedSum(let per) = aggregation else { return unit }
        return "\(unit ?? "level")-\(per.rawValue)s"
    }

    /// Whether an event with these properties counts toward this metric (every filter holds).
    public func matches(_ properties: [String: String]) -> Bool { filters.allSatisfy { $0.matches(properties) } }
}

/// Billing cadence of a plan. Tally bills calendar months in UTC (``BillingPeriod``).
public enum BillingCadence: String, Sendable, Hashable {
    case monthly
}

/// A price plan in one currency: usage charges, flat fees and an optional minimum commitment.
/// Every amount in it is in `currency`.
public struct Plan: Sendable, Hashable {
    public let id: String
    public let currency: Currency
    public let billingPeriod: BillingCadence
    /// At most one usage charge per metric.
    public let usageCharges: [UsageCharge]
    public let flatFees: [FlatFee]
    /// The least the usage lines of a period must add up to; a shortfall is a true-up line.
    public let minimumCommitment: Money?

    public init(
        id: String, currency: Currency, billingPeriod: BillingCadence = .monthly, usageCharges: [UsageCharge],
        flatFees: [FlatFee] = [], minimumCommitment: Money? = nil
    ) {
        self.id = id
        self.currency = currency
        self.billingPeriod = billingPeriod
        self.usageCharges = usageCharges
        self.flatFees = flatFees
        self.minimumCommitment = minimumCommitment
    }

    public func usageCharge(for metric: String) -> UsageCharge? { usageCharges.first { $0.metric == metric } }
}

/// How one metric is charged in a plan. Without `priceBy` there is exactly one price, for all
/// usage of the metric; with it, each value of that property is priced by the first price whose
/// `value` matches, else by the price with no `value` (the fallback), else it is an error.
public struct UsageCharge: Sendable, Hashable {
    public let metric: String
    public let priceBy: String?
    public let prices: [PropertyPrice]

    public init(metric: String, priceBy: String? = nil, prices: [PropertyPrice]) {
        self.metric = metric
        self.priceBy = priceBy
        self.prices = prices
    }

    /// The price for usage whose `priceBy` property has `value` (nil without `priceBy`).
    public func price(for value: String?) -> PropertyPrice? {
        if let value, let exact = prices.first(where: { $0.value == value }) { return exact }
        return prices.first { $0.value == nil }
    }
}

/// One price of a usage charge: a free allowance, then a pricing model.
public struct PropertyPrice: Sendable, Hashable {
    /// The property value this price is for; nil for the fallback (or the only) price.
    public let value: String?
    /// Units given free before the model applies; tiers count from the first billable unit.
    public let freeAllowance: Quantity
    public let model: PriceModel

    public init(value: String? = nil, freeAllowance: Quantity = .zero, model: PriceModel) {
        self.value = value
        self.freeAllowance = freeAllowance
        self.model = model
    }
}

/// How billable units become money.
public enum PriceModel: Sendable, Hashable {
    /// Every unit at one price.
    case perUnit(UnitPrice)
    /// Each unit at the price of the tier it falls in (the first 1,000 at a, the next at b, …).
    case graduated([PriceTier])
    /// Every unit at the price of the one tier the whole quantity falls in.
    case volume([PriceTier])
    /// A price per started package of `size` units (the quantity divided by size, rounded up).
    case package(size: Quantity, price: UnitPrice)
    /// A percentage of each event's quantity, with a fixed fee per event, each event's amount
    /// clamped to an optional minimum and maximum (a card processor's 2.9 % + 0.30).
    case percentage(PercentagePrice)
}

/// A percentage price: each event's amount is `quantity × rate + fixedFee`, raised to
/// `minimum` and lowered to `maximum` when given, and a line's exact amount is the sum of its
/// events' amounts, rounded once as every line is (no rounding per event).
///
/// It is priced from aggregates exactly: without a minimum or maximum, the sum of the amounts is
/// `sum × rate + count × fixedFee`; with them, the ledger keeps the metric's events in three
/// bands (``clampBand``) decided per event when it is aggregated, so that events at the minimum
/// or maximum are counted and the others summed. Every amount is exact: `rate` has at most 12
/// decimal places (a percentage with at most 10), so `quantity × rate` is a ``Money`` with no
/// rounding.
public struct PercentagePrice: Sendable, Hashable {
    /// The fraction of the quantity charged: the percentage over 100 (2.9 % is 0.029).
    public let rate: UnitPrice
    /// Charged per event, on top of the percentage (zero when not given).
    public let fixedFee: UnitPrice
    /// The least an event is charged; nil: no minimum.
    public let minimum: UnitPrice?
    /// The most an event is charged; nil: no maximum.
    public let maximum: UnitPrice?

    public init(rate: UnitPrice, fixedFee: UnitPrice = UnitPrice(picos: 0), minimum: UnitPrice? = nil, maximum: UnitPrice? = nil) {
        self.rate = rate
        self.fixedFee = fixedFee
        self.minimum = minimum
        self.maximum = maximum
    }

    /// Whether an event's amount can be clamped, so that pricing needs each event's band.
    public var clamps: Bool { minimum != nil || maximum != nil }

    /// The ledger dimension that bands a metric's events for this price: an event is `below`
    /// when `quantity × rate + fixedFee < minimum` (it is charged the minimum), `above` when it
    /// is more than `maximum`, `within` otherwise; compared exactly at ``Money``'s scale
    /// (10⁻²¹). nil without a minimum and a maximum, or when a bound leaves the 128-bit range.
    public var clampBand: QuantityBand? {
        guard clamps else { return nil }
        func bound(_ limit: UnitPrice?) -> Int128?? {
            guard let limit else { return .some(nil) }
            let (difference, overflowA) = limit.picos.subtractingReportingOverflow(fixedFee.picos)
            let (scaled, overflowB) = difference.multipliedReportingOverflow(by: 1_000_000_000)
            return overflowA || overflowB ? nil : .some(scaled)
        }
        guard let lower = bound(minimum), let upper = bound(maximum) else { return nil }
        return QuantityBand(multiplier: rate.picos, lower: lower, upper: upper)
    }
}

/// A tier: units up to and including `upTo` (cumulative, counted from the first billable unit)
/// at `unitPrice`. Only the last tier has no `upTo`: it is open-ended.
public struct PriceTier: Sendable, Hashable {
    public let upTo: Quantity?
    public let unitPrice: UnitPrice

    public init(upTo: Quantity?, unitPrice: UnitPrice) {
        self.upTo = upTo
        self.unitPrice = unitPrice
    }
}

/// A fixed amount per billing period, prorated by time when the plan covers part of the period.
public struct FlatFee: Sendable, Hashable {
    public let name: String
    public let amount: Money

    public init(name: String, amount: Money) {
        self.name = name
        self.amount = amount
    }
}

/// A tenant is on a plan from `from` (inclusive) until `until` (exclusive; nil = open-ended).
public struct PlanAssignment: Sendable, Hashable {
    public let tenant: String
    public let planID: String
    public let from: EventTime
    public let until: EventTime?

    public init(tenant: String, planID: String, from: EventTime, until: EventTime? = nil) {
        self.tenant = tenant
        self.planID = planID
        self.from = from
        self.until = until
    }

    public func covers(_ time: EventTime) -> Bool { time >= from && (until.map { time < $0 } ?? true) }
}

/// A usage alert threshold (`alerts:` in the pricing file): when a tenant's usage or charges of
/// a billing period reach it, the collector sends one webhook for that tenant, threshold and
/// period. `name` is the threshold's identity: the same name is the same threshold, whatever
/// its value becomes in a later version of the file.
public struct UsageAlertRule: Sendable, Hashable {
    /// What is compared with the threshold.
    public enum Threshold: Sendable, Hashable {
        /// The metric's period-to-date quantity (filters applied, by event time, late events of
        /// the period included) reaches this quantity.
        case quantity(Quantity)
        /// The metric's quantity reaches this percentage (a whole number, 1 to 1000) of the free
        /// allowance of the plan in force: the metric's charge's only price, or with `price_by`
        /// its fallback price. A tenant whose plan gives no allowance for the metric is not
        /// compared.
        case percentOfFree(Int)
        /// The money charged reaches this amount: the metric's usage lines of the period's
        /// invoice, or without a metric the invoice's total. Compared only for tenants whose
        /// invoice is in the amount's currency.
        case amount(Money)
    }

    public let name: String
    /// nil only for an amount threshold on the invoice total.
    public let metric: String?
    /// Only this tenant; nil: every tenant (restricted by `plan` when given).
    public let tenant: String?
    /// Only tenants on this plan at the time of the check; nil: any plan.
    public let plan: String?
    public let threshold: Threshold

    public init(name: String, metric: String?, tenant: String? = nil, plan: String? = nil, threshold: Threshold) {
        self.name = name
        self.metric = metric
        self.tenant = tenant
        self.plan = plan
        self.threshold = threshold
    }

    /// `quantity`, `percent_of_free` or `amount`, as in the file and the webhook.
    public var kind: String {
        switch threshold {
        case .quantity: "quantity"
        case .percentOfFree: "percent_of_free"
        case .amount: "amount"
        }
    }

    /// The threshold's value as text: `1000000`, `80`, `500.00 USD`.
    public var thresholdText: String {
        switch threshold {
        case .quantity(let quantity): quantity.description
        case .percentOfFree(let percent): String(percent)
        case .amount(let money): money.description
        }
    }
}
