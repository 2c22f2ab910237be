import TallyConfig
import TallyCore

/// One price of a charge: its model, tiers, packages and percentages, checked against its metric.
extension ConfigBuilder {
    mutating func readPrice(_ fields: Fields, value: String?) -> PropertyPrice? {
        var free = Quantity.zero
        if let node = fields["free"] { free = reader.quantity(node, fields.place("free")) ?? .zero }
        guard let modelNode = fields.required("model", &reader), let model = reader.text(modelNode, fields.place("model")) else {
            return nil
        }
        let uses: [String]
        switch model {
        case "per_unit": uses = ["unit_price"]
        case "graduated", "volume": uses = ["tiers"]
        case "package": uses = ["package_size", "package_price"]
        case "percentage": uses = Self.percentageKeys
        default:
            reader.fail(
                fields.place("model"), modelNode, "unknown model '\(model)'; expected per_unit, graduated, volume, package or percentage")
            return nil
        }
        for key in ["unit_price", "tiers", "package_size", "package_price"] + Self.percentageKeys where !uses.contains(key) && fields[key] != nil {
            reader.fail(fields.place(key), fields[key], "does not apply to model \(model)")
        }
        let result: PriceModel?
        switch model {
        case "per_unit":
            result = fields.required("unit_price", &reader).flatMap { reader.price($0, fields.place("unit_price")) }.map { .perUnit($0) }
        case "package":
            var size = fields.required("package_size", &reader).flatMap { reader.quantity($0, fields.place("package_size")) }
            if let quantity = size, quantity.nanos == 0, let node = fields["package_size"] {
                reader.fail(fields.place("package_size"), node, "must be greater than 0")
                size = nil
            }
            let price = fields.required("package_price", &reader).flatMap { reader.price($0, fields.place("package_price")) }
            if let size, let price { result = .package(size: size, price: price) } else { result = nil }
        case "percentage":
            if let node = fields["free"] {
                reader.fail(fields.place("free"), node, "does not apply to model percentage (each event is priced on its own)")
            }
            result = readPercentage(fields).map { .percentage($0) }
        default:
            let tiers = fields.required("tiers", &reader).flatMap { readTiers($0, fields.place("tiers")) }
            result = tiers.map { model == "graduated" ? .graduated($0) : .volume($0) }
        }
        return result.map { PropertyPrice(value: value, freeAllowance: free, model: $0) }
    }

    /// A percentage price: `percent` (at most 10 decimal places, so that the rate has at most
    /// 12), and an optional `fixed_fee`, `minimum_per_event` and `maximum_per_event`, amounts per
    /// event in the plan's currency, with the minimum not above the maximum.
    mutating func readPercentage(_ fields: Fields) -> PercentagePrice? {
        guard let percentNode = fields.required("percent", &reader), let text = reader.text(percentNode, fields.place("percent")) else {
            return nil
        }
        let rate: UnitPrice
        do throws(DecimalTextError) {
            // percent / 100 at scale 12 is percent at scale 10: the same integer.
            rate = UnitPrice(picos: try ExactDecimalText.parse(text, scale: UnitPrice.scale - 2))
        } catch {
            reader.fail(fields.place("percent"), percentNode, error.description)
            return nil
        }
        if rate.picos < 0 {
            reader.fail(fields.place("percent"), percentNode, "must not be negative (got \(text))")
            return nil
        }
        var valid = true
        func amount(_ key: String) -> UnitPrice? {
            guard let node = fields[key] else { return nil }
            let price = reader.price(node, fields.place(key))
            if price == nil { valid = false }
            return price
        }
        let fee = amount("fixed_fee") ?? UnitPrice(picos: 0)
        let minimum = amount("minimum_per_event")
        let maximum = amount("maximum_per_event")
        if let minimum, let maximum, minimum > maximum, let node = fields["maximum_per_event"] {
            reader.fail(fields.place("maximum_per_event"), node, "must not be below minimum_per_event (\(minimum))")
            valid = false
        }
        let price = PercentagePrice(rate: rate, fixedFee: fee, minimum: minimum, maximum: maximum)
        if valid, price.clamps, price.clampBand == nil, let node = fields["minimum_per_event"] ?? fields["maximum_per_event"] {
            reader.fail(fields.place("percent"), node, "minimum_per_event or maximum_per_event less fixed_fee is out of range")
            valid = false
        }
        return valid ? price : nil
    }

    /// A percentage price is of each event's quantity, so its metric aggregates by `sum`; a
    /// per-event minimum or maximum is answered by one band dimension of the aggregates
    /// (``PercentagePrice/clampBand``), which cannot also split by a price_by or filter property.
    mutating func checkPercentage(_ price: PropertyPrice, metric: MetricDefinition, priceBy: String?, fields: Fields) {
        guard case .percentage(let percentage) = price.model else { return }
        let node = fields["model"]
        if metric.aggregation != .sum {
            reader.fail(
                fields.place("model"), node,
                "model percentage charges a percentage of each event's quantity: metric '\(metric.name)' must aggregate by sum, not \(metric.aggregation)"
            )
        }
        guard percentage.clamps else { return }
        if let priceBy {
            reader.fail(
                fields.place("model"), node,
                "a percentage with minimum_per_event or maximum_per_event cannot be priced by '\(priceBy)': the per-event bounds take the aggregates' one dimension"
            )
        } else if !metric.filters.isEmpty {
            reader.fail(
                fields.place("model"), node,
                "a percentage with minimum_per_event or maximum_per_event cannot price metric '\(metric.name)', which has filters: the per-event bounds take the aggregates' one dimension"
            )
        }
    }

    /// Tiers: `up_to` strictly increasing and positive; only the last tier (and it must) omits it.
    mutating func readTiers(_ node: YAMLNode, _ place: String) -> [PriceTier]? {
        guard let items = reader.list(node, place) else { return nil }
        if items.isEmpty {
            reader.fail(place, node, "needs at least one tier")
            return nil
        }
        var tiers: [PriceTier] = []
        var previous: Quantity?
        var valid = true
        for (index, item) in items.enumerated() {
            let here = YAMLReader.child(place, index)
            guard let fields = reader.mapping(item, here, allowed: ["up_to", "unit_price"]) else {
                valid = false
                continue
            }
            let isLast = index == items.count - 1
            var upTo: Quantity?
            if let upNode = fields["up_to"] {
                upTo = reader.quantity(upNode, fields.place("up_to"))
                if let value = upTo {
                    if isLast {
                        reader.fail(fields.place("up_to"), upNode, "the last tier must have no up_to, so that every quantity has a price")
                        valid = false
                    } else if value.nanos == 0 {
                        reader.fail(fields.place("up_to"), upNode, "must be greater than 0")
                        valid = false
                    } else if let previous, value <= previous {
                        reader.fail(fields.place("up_to"), upNode, "tiers must increase: \(value) is not above the previous tier's up_to \(previous)")
                        valid = false
                    }
                    previous = value
                } else {
                    valid = false
                }
            } else if !isLast {
                reader.fail(fields.place("up_to"), item, "is required on every tier but the last")
                valid = false
            }
            guard let priceNode = fields.required("unit_price", &reader), let price = reader.price(priceNode, fields.place("unit_price")) else {
                valid = false
                continue
            }
            tiers.append(PriceTier(upTo: isLast ? nil : upTo, unitPrice: price))
        }
        return valid ? tiers : nil
    }
}
