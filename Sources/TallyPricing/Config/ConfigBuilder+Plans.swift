import TallyConfig
import TallyCore

/// The `plans:` section of a pricing file: plans and their charges.
extension ConfigBuilder {
    // MARK: Plans

    mutating func readPlans(_ node: YAMLNode, _ place: String) -> [Plan] {
        guard let items = reader.list(node, place) else { return [] }
        var result: [Plan] = []
        for (index, item) in items.enumerated() {
            let here = YAMLReader.child(place, index)
            guard let fields = reader.mapping(item, here, allowed: ["id", "currency", "billing_period", "charges", "minimum_commitment"])
            else { continue }
            let id = fields.required("id", &reader).flatMap { reader.name($0, fields.place("id")) }
            if let id, result.contains(where: { $0.id == id }), let node = fields["id"] {
                reader.fail(fields.place("id"), node, "plan '\(id)' is defined twice")
            }
            var currency: Currency?
            if let node = fields.required("currency", &reader), let code = reader.text(node, fields.place("currency")) {
                currency = Currency(code: code)
                if currency == nil {
                    reader.fail(fields.place("currency"), node, "unknown currency '\(code)'; expected an ISO 4217 code such as USD, EUR or JPY")
                }
            }
            if let node = fields["billing_period"], let text = reader.text(node, fields.place("billing_period")), text != "monthly" {
                reader.fail(
                    fields.place("billing_period"), node, "unsupported billing period '\(text)'; Tally bills 'monthly' (calendar months, UTC)")
            }
            var minimum: Money?
            if let node = fields["minimum_commitment"] {
                minimum = reader.money(node, fields.place("minimum_commitment"), currency: currency)
            }
            var usage: [UsageCharge] = []
            var flat: [FlatFee] = []
            if let node = fields.required("charges", &reader) {
                (usage, flat) = readCharges(node, fields.place("charges"), currency: currency)
            }
            if let id, let currency {
                result.append(Plan(id: id, currency: currency, usageCharges: usage, flatFees: flat, minimumCommitment: minimum))
            }
        }
        return result
    }

    static let percentageKeys = ["percent", "fixed_fee", "minimum_per_event", "maximum_per_event"]
    static let priceKeys = ["model", "unit_price", "tiers", "package_size", "package_price", "free"] + percentageKeys

    mutating func readCharges(_ node: YAMLNode, _ place: String, currency: Currency?) -> ([UsageCharge], [FlatFee]) {
        guard let items = reader.list(node, place) else { return ([], []) }
        var usage: [UsageCharge] = []
        var flat: [FlatFee] = []
        for (index, item) in items.enumerated() {
            let here = YAMLReader.child(place, index)
            if item.mapping?.contains(where: { $0.key.scalar?.string == "flat_fee" }) == true {
                guard let fields = reader.mapping(item, here, allowed: ["flat_fee", "name"]) else { continue }
                let name = fields["name"].flatMap { reader.text($0, fields.place("name")) } ?? "Flat fee"
                if let node = fields["flat_fee"], let amount = reader.money(node, fields.place("flat_fee"), currency: currency) {
                    flat.append(FlatFee(name: name, amount: amount))
                }
                continue
            }
            guard let fields = reader.mapping(item, here, allowed: ["metric", "price_by", "prices"] + Self.priceKeys) else { continue }
            guard let metricNode = fields.required("metric", &reader), let metricName = reader.name(metricNode, fields.place("metric"))
            else { continue }
            guard let metric = metrics.first(where: { $0.name == metricName }) else {
                reader.fail(
                    fields.place("metric"), metricNode,
                    "unknown metric '\(metricName)'; defined metrics: \(metrics.map(\.name).joined(separator: ", "))")
                continue
            }
            if usage.contains(where: { $0.metric == metricName }) {
                reader.fail(fields.place("metric"), metricNode, "metric '\(metricName)' is already charged in this plan")
                continue
            }
            if let byNode = fields["price_by"] {
                guard let property = reader.name(byNode, fields.place("price_by")) else { continue }
                if !metric.groupBy.contains(property) {
                    reader.fail(
                        fields.place("price_by"), byNode, "metric '\(metricName)' is not grouped by '\(property)'; add it to the metric's group_by")
                }
                for key in Self.priceKeys where fields[key] != nil {
                    reader.fail(fields.place(key), fields[key], "with price_by, each price goes in 'prices'")
                }
                guard let pricesNode = fields.required("prices", &reader), let entries = reader.list(pricesNode, fields.place("prices")) else {
                    continue
                }
                var prices: [PropertyPrice] = []
                for (priceIndex, entry) in entries.enumerated() {
                    let entryPlace = YAMLReader.child(fields.place("prices"), priceIndex)
                    guard let priceFields = reader.mapping(entry, entryPlace, allowed: ["when"] + Self.priceKeys) else { continue }
                    var value: String?
                    if let whenNode = priceFields["when"] {
                        value = reader.text(whenNode, priceFields.place("when"))
                        if let value, prices.contains(where: { $0.value == value }) {
                            reader.fail(priceFields.place("when"), whenNode, "'\(value)' already has a price")
                        }
                    } else if prices.contains(where: { $0.value == nil }) {
                        reader.fail(entryPlace, entry, "only one price may omit 'when' (the price for every other value)")
                    }
                    if let price = readPrice(priceFields, value: value) {
                        checkPercentage(price, metric: metric, priceBy: property, fields: priceFields)
                        prices.append(price)
                    }
                }
                usage.append(UsageCharge(metric: metricName, priceBy: property, prices: prices))
            } else {
                if let node = fields["prices"] {
                    reader.fail(fields.place("prices"), node, "'prices' needs 'price_by' (the property whose value selects the price)")
                }
                if let price = readPrice(fields, value: nil) {
                    checkPercentage(price, metric: metric, priceBy: nil, fields: fields)
                    usage.append(UsageCharge(metric: metricName, prices: [price]))
                }
            }
        }
        return (usage, flat)
    }

    /// One price: a free allowance and a model with its own keys.
}
