public import TallyCore

/// Turns a tenant's usage for a billing period into an ``Invoice``. Pure: no I/O, no clock, no
/// shared state; the same config and usage always give the same invoice, to the minor unit.
///
/// **Plan changes inside a period.** The period is cut into ``PlanSegment``s at every
/// assignment boundary (``segments(tenant:period:)``); the caller aggregates usage per segment.
/// - Each unit is priced by the plan in force when it was used.
/// - For additive metrics (sum, count) the period stays one sequence of units: a segment's units
///   continue from the units of the same key in earlier segments, so a plan change never
///   re-grants a free allowance or restarts graduated tiers or packages, and a volume tier is
///   chosen by the whole period's quantity. Non-additive metrics (max, min, avg, latest,
///   unique_count) are priced per segment from zero, as their aggregates do not add up across
///   segments. A percentage price is per event: each segment prices its own events
///   (``SegmentUsage/percentageBases``), whatever came before.
/// - Flat fees and the minimum commitment are prorated by the segment's share of the period's
///   time (microseconds), so a mid-month change neither charges two full fees nor none; a full
///   period is charged exactly the fee. Each prorated amount is rounded once, as its line.
///
/// **Minimum commitment.** Per segment: when the segment's rounded usage lines add up to less
/// than the (prorated, rounded) minimum, a true-up line adds the difference. Flat fees do not
/// count toward the minimum.
///
/// **Late usage.** A ``UsageAdjustment`` re-prices the original period with the corrected usage
/// by the plans then in force, and emits, per line, the difference from what was billed. The
/// original invoice plus its adjustments therefore equals, to the minor unit, the invoice the
/// period would have had if the late events had arrived on time.
public struct PricingEngine: Sendable {
    public let config: PricingConfig

    public init(config: PricingConfig) { self.config = config }

    /// The plan in force for `tenant` at `time`: the covering assignment, else the default plan.
    public func plan(for tenant: String, at time: EventTime) throws(PricingError) -> Plan {
        let id = config.assignments.first { $0.tenant == tenant && $0.covers(time) }?.planID ?? config.defaultPlanID
        guard let id, let plan = config.plan(id: id) else { throw .noPlan(tenant: tenant, at: time) }
        return plan
    }

    /// The plan segments of `tenant` in `period`, in time order, covering the whole period;
    /// adjacent ranges on the same plan are one segment.
    public func segments(tenant: String, period: BillingPeriod) throws(PricingError) -> [PlanSegment] {
        var cuts: Set<EventTime> = [period.start, period.end]
        for assignment in config.assignments where assignment.tenant == tenant {
            for cut in [assignment.from, assignment.until].compactMap({ $0 }) where cut > period.start && cut < period.end {
                cuts.insert(cut)
            }
        }
        let ordered = cuts.sorted()
        var result: [PlanSegment] = []
        for (start, end) in zip(ordered, ordered.dropFirst()) {
            let plan = try plan(for: tenant, at: start)
            if let last = result.last, last.planID == plan.id {
                result[result.count - 1] = PlanSegment(planID: plan.id, start: last.start, end: end)
            } else {
                result.append(PlanSegment(planID: plan.id, start: start, end: end))
            }
        }
        return result
    }

    /// The invoice when the period has one plan segment (no plan change in the period).
    public func invoice(
        tenant: String, period: BillingPeriod, usage: [UsageKey: Quantity], adjustments: [UsageAdjustment] = []
    ) throws(PricingError) -> Invoice {
        let segments = try segments(tenant: tenant, period: period)
        guard segments.count == 1, let only = segments.first else {
            throw .segmentMismatch(
                "the plan changes inside \(period) (\(segments.map(\.description).joined(separator: ", "))); give usage per segment")
        }
        return try invoice(tenant: tenant, period: period, usage: [SegmentUsage(segment: only, quantities: usage)], adjustments: adjustments)
    }

    /// The invoice for `period`: usage per plan segment (a segment left out has no usage), then
    /// the lines of each adjustment for late usage of an earlier period.
    public func invoice(
        tenant: String, period: BillingPeriod, usage: [SegmentUsage], adjustments: [UsageAdjustment] = []
    ) throws(PricingError) -> Invoice {
        let segments = try segments(tenant: tenant, period: period)
        var lines = try periodLines(tenant: tenant, period: period, segments: segments, usage: usage)
        let currency = try plan(for: tenant, at: period.start).currency
        for adjustment in adjustments {
            let adjustmentLines = try self.adjustmentLines(tenant: tenant, adjustment: adjustment)
            if let other = adjustmentLines.first?.amount.currency, other != currency {
                throw .currencyMismatch(tenant: tenant, currency, other)
            }
            lines += adjustmentLines
        }
        var total = Money.zero(currency)
        for line in lines {
            do throws(MoneyError) {
                total = try total.adding(line.amount)
            } catch {
                if case .currencyMismatch(let a, let b) = error { throw .currencyMismatch(tenant: tenant, a, b) }
                throw .overflow(context: "the invoice total", detail: error.description)
            }
        }
        return Invoice(tenant: tenant, period: period, currency: currency, segments: segments, lines: lines, total: total)
    }

    /// The lines that correct an earlier period for late usage: per line of that period, the
    /// corrected amount less the billed amount (lines that do not change are left out).
    public func adjustmentLines(tenant: String, adjustment: UsageAdjustment) throws(PricingError) -> [InvoiceLine] {
        let period = adjustment.originalPeriod
        let segments = try segments(tenant: tenant, period: period)
        let billed = try periodLines(tenant: tenant, period: period, segments: segments, usage: adjustment.billed)
        let corrected = try periodLines(tenant: tenant, period: period, segments: segments, usage: adjustment.corrected)
        struct Identity: Hashable {
            let kind: InvoiceLine.Kind
            let segment: PlanSegment
            let description: String
        }
        func identity(_ line: InvoiceLine) -> Identity { Identity(kind: line.kind, segment: line.segment, description: line.description) }
        let billedByIdentity = Dictionary(billed.map { (identity($0), $0) }, uniquingKeysWith: { first, _ in first })
        var result: [InvoiceLine] = []
        var seen: Set<Identity> = []
        // Corrected lines in order, then billed lines that vanished (e.g. a true-up now met).
        let removed = billed.filter { line in !corrected.contains { identity($0) == identity(line) } }
        for line in corrected + removed.map({ zeroed($0) }) {
            let key = identity(line)
            guard seen.insert(key).inserted else { continue }
            let before = billedByIdentity[key]
            do {
                let quantity = try line.quantity.subtracting(before?.quantity ?? .zero)
                let free = try line.freeQuantity.subtracting(before?.freeQuantity ?? .zero)
                let amount = try line.amount.subtracting(before?.amount ?? .zero(line.amount.currency))
                if quantity == .zero && amount.scaledAmount == 0 { continue }
                result.append(
                    InvoiceLine(
                        kind: line.kind, description: "\(line.description) (adjustment for \(period))", planID: line.planID,
                        segment: line.segment, metric: line.metric, propertyValue: line.propertyValue, quantity: quantity,
                        freeQuantity: free, steps: [], exactAmount: amount, amount: amount, adjusts: period))
            } catch {
                throw .overflow(context: "the adjustment for \(period)", detail: "\(error)")
            }
        }
        return result
    }

    private func zeroed(_ line: InvoiceLine) -> InvoiceLine {
        let zero = Money.zero(line.amount.currency)
        return InvoiceLine(
            kind: line.kind, description: line.description, planID: line.planID, segment: line.segment, metric: line.metric,
            propertyValue: line.propertyValue, quantity: .zero, freeQuantity: .zero, steps: [], exactAmount: zero, amount: zero,
            adjusts: nil)
    }

    // MARK: Lines of one period

    private func periodLines(
        tenant: String, period: BillingPeriod, segments: [PlanSegment], usage: [SegmentUsage]
    ) throws(PricingError) -> [InvoiceLine] {
        var seenSegments: Set<PlanSegment> = []
        for given in usage {
            guard segments.contains(given.segment) else {
                throw .segmentMismatch(
                    "\(given.segment) is not a plan segment of '\(tenant)' in \(period); the segments are \(segments.map(\.description).joined(separator: ", "))"
                )
            }
            guard seenSegments.insert(given.segment).inserted else { throw .segmentMismatch("\(given.segment) is given twice") }
        }
        let periodMicros = Int128(period.end.microseconds - period.start.microseconds)
        var lines: [InvoiceLine] = []
        var cumulative: [UsageKey: Quantity] = [:]
        var currency: Currency?
        let totals = try periodTotals(usage)
        for segment in segments {
            guard let plan = config.plan(id: segment.planID) else { throw .noPlan(tenant: tenant, at: segment.start) }
            if let currency, currency != plan.currency { throw .currencyMismatch(tenant: tenant, currency, plan.currency) }
            currency = plan.currency
            let given = usage.first { $0.segment == segment }
            let quantities = given?.quantities ?? [:]
            let bases = given?.percentageBases ?? [:]
            try validate(quantities, plan: plan)
            let segmentMicros = Int128(segment.end.microseconds - segment.start.microseconds)
            var usageTotal = Money.zero(plan.currency)
            for charge in plan.usageCharges {
                var keys = quantities.keys.filter { $0.metric == charge.metric }.sorted()
                if charge.priceBy == nil { keys = [UsageKey(metric: charge.metric)] }
                let additive = config.metric(named: charge.metric)?.aggregation.isAdditive ?? true
                for key in keys {
                    let quantity = quantities[key] ?? .zero
                    let start = additive ? cumulative[key] ?? .zero : .zero
                    let end: Quantity
                    do throws(ArithmeticOverflow) {
                        end = try start.adding(quantity)
                    } catch {
                        throw .overflow(context: "\(key) usage", detail: error.description)
                    }
                    if additive { cumulative[key] = end }
                    let line = try usageLine(
                        charge: charge, key: key, plan: plan, segment: segment, quantity: quantity, start: start, end: end,
                        volumeBasis: additive ? totals[key] ?? .zero : quantity, percentageBasis: bases[key])
                    lines.append(line)
                    usageTotal = try add(usageTotal, line.amount, context: "the usage of plan '\(plan.id)'")
                }
            }
            for fee in plan.flatFees {
                let amount = try round(fee.amount, segmentMicros, periodMicros, context: fee.name)
                lines.append(
                    InvoiceLine(
                        kind: .flatFee, description: fee.name, planID: plan.id, segment: segment, metric: nil, propertyValue: nil,
                        quantity: .zero, freeQuantity: .zero, steps: [], exactAmount: fee.amount, amount: amount, adjusts: nil))
            }
            if let minimum = plan.minimumCommitment {
                let prorated = try round(minimum, segmentMicros, periodMicros, context: "the minimum commitment")
                if usageTotal < prorated {
                    let trueUp: Money
                    do throws(MoneyError) {
                        trueUp = try prorated.subtracting(usageTotal)
                    } catch {
                        throw .overflow(context: "the minimum commitment", detail: error.description)
                    }
                    lines.append(
                        InvoiceLine(
                            kind: .minimumTrueUp, description: "Minimum commitment", planID: plan.id, segment: segment, metric: nil,
                            propertyValue: nil, quantity: .zero, freeQuantity: .zero, steps: [], exactAmount: trueUp, amount: trueUp,
                            adjusts: nil))
                }
            }
        }
        return lines
    }

    private func usageLine(
        charge: UsageCharge, key: UsageKey, plan: Plan, segment: PlanSegment, quantity: Quantity, start: Quantity, end: Quantity,
        volumeBasis: Quantity, percentageBasis: PercentageBasis?
    ) throws(PricingError) -> InvoiceLine {
        guard let price = charge.price(for: key.propertyValue) else {
            throw .unpricedValue(metric: key.metric, property: charge.priceBy ?? "", value: key.propertyValue ?? "")
        }
        if case .percentage = price.model, percentageBasis == nil, quantity != .zero {
            throw .segmentMismatch("\(key) is priced by percentage: give its events (a PercentageBasis), not only its quantity, in \(segment)")
        }
        var pricing = UsagePricing(price: price, currency: plan.currency, start: start, end: end, volumeBasis: volumeBasis)
        pricing.percentageBasis = percentageBasis
        let result = try pricing.price(context: key.description)
        let amount = try round(result.exact, 1, 1, context: key.description)
        let description = charge.priceBy.map { "\(key.metric) (\($0) \(key.propertyValue ?? ""))" } ?? key.metric
        return InvoiceLine(
            kind: .usage, description: description, planID: plan.id, segment: segment, metric: key.metric,
            propertyValue: key.propertyValue, quantity: quantity, freeQuantity: result.free, steps: result.steps,
            exactAmount: result.exact, amount: amount, adjusts: nil)
    }

    /// Each key's quantity summed over the period's segments (for volume tiers).
    private func periodTotals(_ usage: [SegmentUsage]) throws(PricingError) -> [UsageKey: Quantity] {
        var totals: [UsageKey: Quantity] = [:]
        for segment in usage {
            for (key, quantity) in segment.quantities {
                do throws(ArithmeticOverflow) {
                    totals[key] = try (totals[key] ?? .zero).adding(quantity)
                } catch {
                    throw .overflow(context: "\(key) usage", detail: error.description)
                }
            }
        }
        return totals
    }

    /// Usage must name defined metrics, be non-negative, and be split exactly as the plan prices it.
    private func validate(_ quantities: [UsageKey: Quantity], plan: Plan) throws(PricingError) {
        for (key, quantity) in quantities.sorted(by: { $0.key < $1.key }) {
            guard config.metric(named: key.metric) != nil else { throw .unknownMetric(key.metric) }
            if quantity.nanos < 0 { throw .negativeUsage(metric: key.metric, quantity: quantity) }
            guard let charge = plan.usageCharge(for: key.metric) else { continue }
            switch (charge.priceBy, key.propertyValue) {
            case (let property?, nil): throw .usageNotSplit(metric: key.metric, property: property)
            case (nil, let value?): throw .unexpectedPropertyValue(metric: key.metric, value: value)
            default: break
            }
        }
    }

    /// Every rounding of the engine goes through ``Money/roundedForInvoiceLine(times:over:)``.
    private func round(_ amount: Money, _ numerator: Int128, _ denominator: Int128, context: String) throws(PricingError) -> Money {
        do throws(MoneyError) {
            return try amount.roundedForInvoiceLine(times: numerator, over: denominator)
        } catch {
            throw .overflow(context: context, detail: error.description)
        }
    }

    private func add(_ a: Money, _ b: Money, context: String) throws(PricingError) -> Money {
        do throws(MoneyError) {
            return try a.adding(b)
        } catch {
            throw .overflow(context: context, detail: error.description)
        }
    }
}
