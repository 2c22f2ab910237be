public import TallyCore

/// A time range inside one billing period during which one plan is in force for a tenant.
/// Segments of a period are contiguous, in time order, and cover the whole period.
public struct PlanSegment: Sendable, Hashable, CustomStringConvertible {
    public let planID: String
    /// Inclusive.
    public let start: EventTime
    /// Exclusive.
    public let end: EventTime

    public init(planID: String, start: EventTime, end: EventTime) {
        self.planID = planID
        self.start = start
        self.end = end
    }

    public var description: String { "\(planID) [\(start), \(end))" }
}

/// Which usage a quantity is: a metric, and the value of the charge's `price_by` property when
/// the plan prices the metric by a property (nil otherwise).
public struct UsageKey: Sendable, Hashable, Comparable, CustomStringConvertible {
    public let metric: String
    public let propertyValue: String?

    public init(metric: String, propertyValue: String? = nil) {
        self.metric = metric
        self.propertyValue = propertyValue
    }

    public static func < (lhs: UsageKey, rhs: UsageKey) -> Bool {
        (lhs.metric, lhs.propertyValue ?? "") < (rhs.metric, rhs.propertyValue ?? "")
    }

    public var description: String { propertyValue.map { "\(metric)[\($0)]" } ?? metric }
}

/// A tenant's aggregated usage during one plan segment: one quantity per ``UsageKey``, and for
/// a key priced by percentage, what its events are made of (``PercentageBasis``).
public struct SegmentUsage: Sendable, Hashable {
    public let segment: PlanSegment
    public let quantities: [UsageKey: Quantity]
    /// For each key priced by a ``PercentagePrice``; a key left out has no events.
    public let percentageBases: [UsageKey: PercentageBasis]

    public init(segment: PlanSegment, quantities: [UsageKey: Quantity], percentageBases: [UsageKey: PercentageBasis] = [:]) {
        self.segment = segment
        self.quantities = quantities
        self.percentageBases = percentageBases
    }
}

/// What a percentage price needs of a key's events, from aggregates: the events charged the
/// percentage (their quantities' sum and their number), and the numbers charged the per-event
/// minimum and maximum instead. Without a minimum or maximum every event is in `charged`.
public struct PercentageBasis: Sendable, Hashable {
    /// The sum of the quantities of the events charged `quantity × rate + fixedFee`.
    public var chargedQuantity: Quantity
    /// The number of those events.
    public var chargedEvents: Int64
    /// Events whose amount was below the minimum: each is charged the minimum.
    public var eventsAtMinimum: Int64
    /// Events whose amount was above the maximum: each is charged the maximum.
    public var eventsAtMaximum: Int64

    public init(chargedQuantity: Quantity = .zero, chargedEvents: Int64 = 0, eventsAtMinimum: Int64 = 0, eventsAtMaximum: Int64 = 0) {
        self.chargedQuantity = chargedQuantity
        self.chargedEvents = chargedEvents
        self.eventsAtMinimum = eventsAtMinimum
        self.eventsAtMaximum = eventsAtMaximum
    }

    /// Both bases' events, checked.
    public func adding(_ other: PercentageBasis) throws(ArithmeticOverflow) -> PercentageBasis {
        func add(_ a: Int64, _ b: Int64) throws(ArithmeticOverflow) -> Int64 {
            let (sum, overflow) = a.addingReportingOverflow(b)
            if overflow { throw ArithmeticOverflow(operation: "\(a) + \(b) events") }
            return sum
        }
        return PercentageBasis(
            chargedQuantity: try chargedQuantity.adding(other.chargedQuantity), chargedEvents: try add(chargedEvents, other.chargedEvents),
            eventsAtMinimum: try add(eventsAtMinimum, other.eventsAtMinimum), eventsAtMaximum: try add(eventsAtMaximum, other.eventsAtMaximum))
    }
}

/// Late usage for an earlier, already invoiced period: what was billed and what the usage is
/// now that the late events are counted. It produces adjustment lines priced by the plans that
/// were in force in `originalPeriod`.
public struct UsageAdjustment: Sendable, Hashable {
    public let originalPeriod: BillingPeriod
    public let billed: [SegmentUsage]
    public let corrected: [SegmentUsage]

    public init(originalPeriod: BillingPeriod, billed: [SegmentUsage], corrected: [SegmentUsage]) {
        self.originalPeriod = originalPeriod
        self.billed = billed
        self.corrected = corrected
    }

    /// For additive metrics (sum, count): corrected = billed + late, per segment and key, checked.
    public static func addingLate(
        originalPeriod: BillingPeriod, billed: [SegmentUsage], late: [SegmentUsage]
    ) throws(PricingError) -> UsageAdjustment {
        var corrected: [SegmentUsage] = []
        var segments = billed.map(\.segment)
        for extra in late.map(\.segment) where !segments.contains(extra) { segments.append(extra) }
        for segment in segments {
            let before = billed.first { $0.segment == segment }
            let extra = late.first { $0.segment == segment }
            var quantities = before?.quantities ?? [:]
            var bases = before?.percentageBases ?? [:]
            for (key, quantity) in extra?.quantities ?? [:] {
                do throws(ArithmeticOverflow) {
                    quantities[key] = try (quantities[key] ?? .zero).adding(quantity)
                } catch {
                    throw .overflow(context: "late usage of \(key)", detail: error.description)
                }
            }
            for (key, basis) in extra?.percentageBases ?? [:] {
                do throws(ArithmeticOverflow) {
                    bases[key] = try (bases[key] ?? PercentageBasis()).adding(basis)
                } catch {
                    throw .overflow(context: "late usage of \(key)", detail: error.description)
                }
            }
            corrected.append(SegmentUsage(segment: segment, quantities: quantities, percentageBases: bases))
        }
        return UsageAdjustment(originalPeriod: originalPeriod, billed: billed, corrected: corrected)
    }
}

/// One priced step of a usage line: a tier's share, the per-unit price, or the packages.
/// `amount` is exact (`quantity × unitPrice`, not rounded).
public struct PriceStep: Sendable, Hashable {
    /// 1-based tier number for graduated and volume prices; nil otherwise.
    public let tier: Int?
    /// Units priced in this step; for a package price, the number of packages; for a
    /// percentage price's fee, minimum and maximum steps, the number of events.
    public let quantity: Quantity
    /// Price per unit (per package for a package price, the rate for a percentage, per event
    /// for its fee, minimum and maximum).
    public let unitPrice: UnitPrice
    public let amount: Money
}

/// One line of an invoice. `amount` is rounded to the currency's minor units once (see
/// ``Money/roundedForInvoiceLine(times:over:)``). `exactAmount` is what was rounded: the exact
/// sum of the steps for a usage line, the whole-period fee for a (prorated) flat fee; for a
/// true-up or an adjustment, which are differences of rounded amounts, it equals `amount`.
public struct InvoiceLine: Sendable, Hashable {
    public enum Kind: String, Sendable, Hashable {
        /// A metric's usage, priced.
        case usage
        /// A flat fee, prorated to the segment.
        case flatFee = "flat_fee"
        /// The shortfall of the usage lines below the plan's minimum commitment.
        case minimumTrueUp = "minimum_true_up"
    }

    public let kind: Kind
    /// Human text: `api_calls`, `api_calls (region eu)`, `Platform fee`, `Minimum commitment`.
    public let description: String
    public let planID: String
    public let segment: PlanSegment
    public let metric: String?
    public let propertyValue: String?
    /// Usage in this segment (0 for fee and true-up lines; a delta for adjustments).
    public let quantity: Quantity
    /// Units of `quantity` covered by the free allowance.
    public let freeQuantity: Quantity
    public let steps: [PriceStep]
    public let exactAmount: Money
    public let amount: Money
    /// For an adjustment line: the earlier period it corrects.
    public let adjusts: BillingPeriod?
}

/// A tenant's invoice for one period: the lines of every plan segment, then adjustment lines
/// for late usage of earlier periods; `total` is the exact sum of the rounded line amounts.
public struct Invoice: Sendable, Hashable {
    public let tenant: String
    public let period: BillingPeriod
    public let currency: Currency
    public let segments: [PlanSegment]
    public let lines: [InvoiceLine]
    public let total: Money
}
