import TallyCore

/// Prices one usage key in one segment: the units from `start` to `end` of the period's
/// cumulative usage (start > 0 only after a plan change, for additive metrics).
///
/// The free allowance covers the first `free` units of the period; tiers and packages count
/// billable units (after the allowance). A graduated tier covers billable units in
/// (previous up_to, up_to]; a volume price uses the one tier that `volumeBasis` billable units
/// fall in (a quantity equal to up_to is in that tier).
struct UsagePricing {
    let price: PropertyPrice
    let currency: Currency
    let start: Quantity
    let end: Quantity
    /// The period's quantity that selects a volume tier.
    let volumeBasis: Quantity
    /// The segment's events, for a percentage price (nil: none).
    var percentageBasis: PercentageBasis? = nil

    struct Result {
        var free: Quantity
        var steps: [PriceStep]
        var exact: Money
    }

    func price(context: String) throws(PricingError) -> Result {
        do {
            return try compute()
        } catch let error as MoneyError {
            throw .overflow(context: context, detail: error.description)
        } catch let error as ArithmeticOverflow {
            throw .overflow(context: context, detail: error.description)
        } catch {
            throw .overflow(context: context, detail: "\(error)")
        }
    }

    private func compute() throws -> Result {
        let free = price.freeAllowance
        let freeUsed = try Swift.min(end, free).subtracting(Swift.min(start, free))
        let billableStart = try Swift.max(.zero, start.subtracting(free))
        let billableEnd = try Swift.max(.zero, end.subtracting(free))
        var steps: [PriceStep] = []
        switch price.model {
        case .perUnit(let unitPrice):
            let quantity = try billableEnd.subtracting(billableStart)
            steps.append(PriceStep(tier: nil, quantity: quantity, unitPrice: unitPrice, amount: try .product(quantity, unitPrice, in: currency)))
        case .graduated(let tiers):
            var lower = Quantity.zero
            for (index, tier) in tiers.enumerated() {
                let upper = tier.upTo
                let from = Swift.max(billableStart, lower)
                let to = upper.map { Swift.min(billableEnd, $0) } ?? billableEnd
                if to > from {
                    let quantity = try to.subtracting(from)
                    steps.append(
                        PriceStep(
                            tier: index + 1, quantity: quantity, unitPrice: tier.unitPrice,
                            amount: try .product(quantity, tier.unitPrice, in: currency)))
                }
                guard let upper else { break }
                lower = upper
            }
        case .volume(let tiers):
            let basis = try Swift.max(.zero, volumeBasis.subtracting(free))
            let index = tiers.firstIndex { tier in tier.upTo.map { basis <= $0 } ?? true } ?? (tiers.count - 1)
            let quantity = try billableEnd.subtracting(billableStart)
            let unitPrice = tiers[index].unitPrice
            steps.append(
                PriceStep(tier: index + 1, quantity: quantity, unitPrice: unitPrice, amount: try .product(quantity, unitPrice, in: currency)))
        case .package(let size, let packagePrice):
            let count = Self.packages(billableEnd, size) - Self.packages(billableStart, size)
            let (nanos, overflow) = count.multipliedReportingOverflow(by: Quantity.nanosPerUnit)
            if overflow { throw MoneyError.overflow("\(count) packages") }
            steps.append(
                PriceStep(
                    tier: nil, quantity: Quantity(nanos: nanos), unitPrice: packagePrice,
                    amount: try .product(count: count, packagePrice, in: currency)))
        case .percentage(let percentage):
            // Per event; the units of the segment only (a plan change carries nothing over).
            let basis = percentageBasis ?? PercentageBasis()
            steps.append(
                PriceStep(
                    tier: nil, quantity: basis.chargedQuantity, unitPrice: percentage.rate,
                    amount: try .product(basis.chargedQuantity, percentage.rate, in: currency)))
            let perEvent: [(events: Int64, price: UnitPrice?)] = [
                (basis.chargedEvents, percentage.fixedFee.picos == 0 ? nil : percentage.fixedFee),
                (basis.eventsAtMinimum, percentage.minimum), (basis.eventsAtMaximum, percentage.maximum),
            ]
            for (events, price) in perEvent {
                guard let price, events > 0 else { continue }
                steps.append(
                    PriceStep(
                        tier: nil, quantity: Quantity(events), unitPrice: price, amount: try .product(count: Int128(events), price, in: currency)))
            }
        }
        var exact = Money.zero(currency)
        for step in steps { exact = try exact.adding(step.amount) }
        return Result(free: freeUsed, steps: steps, exact: exact)
    }

    /// Packages started by `quantity` units: quantity / size rounded up (0 for 0).
    static func packages(_ quantity: Quantity, _ size: Quantity) -> Int128 {
        let (whole, remainder) = quantity.nanos.quotientAndRemainder(dividingBy: size.nanos)
        return remainder > 0 ? whole + 1 : whole
    }
}
