import TallyCore
public import TallyConfig

/// Reads a pricing YAML file (the format is in `deploy/PRICING.md`) into a validated
/// ``PricingConfig``. Reading the file is its only I/O. Every problem is reported at once, each
/// with the file, the place and the problem; a config with any problem is never returned.
public enum PricingConfigLoader {
    /// Loads and validates the pricing file at `path`.
    public static func load(file path: String) throws(PricingConfigError) -> PricingConfig {
        try load(yaml: ConfigDocument.text(ofFile: path), file: path)
    }

    /// Validates pricing YAML given as text; `file` names it in errors.
    public static func load(yaml: String, file: String = "<string>") throws(PricingConfigError) -> PricingConfig {
        let root = try ConfigDocument.compose(yaml, file: file)
        guard let root else {
            throw PricingConfigError(file: file, issues: [PricingConfigIssue(place: "", problem: "the file is empty")])
        }
        var builder = ConfigBuilder()
        let config = builder.build(root)
        if let config, builder.reader.issues.isEmpty { return config }
        throw PricingConfigError(file: file, issues: builder.reader.issues)
    }
}

/// Builds the config section by section; each check appends to `reader.issues`.
struct ConfigBuilder {
    var reader = YAMLReader()
    private var metrics: [MetricDefinition] = []

    mutating func build(_ root: YAMLNode) -> PricingConfig? {
        guard let top = reader.mapping(root, "", allowed: ["metrics", "plans", "default_plan", "assignments", "alerts"]) else { return nil }
        if let node = top.required("metrics", &reader) { metrics = readMetrics(node, top.place("metrics")) }
        var plans: [Plan] = []
        if let node = top.required("plans", &reader) { plans = readPlans(node, top.place("plans")) }
        let planIDs = Set(plans.map(\.id))
        var defaultPlan: String?
        if let node = top["default_plan"], let id = reader.name(node, top.place("default_plan")) {
            if planIDs.contains(id) {
                defaultPlan = id
            } else {
                reader.fail(top.place("default_plan"), node, "unknown plan '\(id)'; plans are: \(plans.map(\.id).joined(separator: ", "))")
            }
        }
        var assignments: [PlanAssignment] = []
        if let node = top["assignments"] {
            assignments = readAssignments(node, top.place("assignments"), plans: plans)
        }
        var alerts: [UsageAlertRule] = []
        if let node = top["alerts"] { alerts = readAlerts(node, top.place("alerts"), plans: plans) }
        return PricingConfig(metrics: metrics, plans: plans, assignments: assignments, defaultPlanID: defaultPlan, alerts: alerts)
    }

    // MARK: Alerts

    /// Usage alert thresholds: a unique name, exactly one of `quantity`, `percent_of_free` and
    /// `amount` (with its `currency`), the metric (required but for an amount on the invoice
    /// total), and optionally one tenant or one plan.
    private mutating func readAlerts(_ node: YAMLNode, _ place: String, plans: [Plan]) -> [UsageAlertRule] {
        guard let items = reader.list(node, place) else { return [] }
        var result: [UsageAlertRule] = []
        var names: Set<String> = []
        for (index, item) in items.enumerated() {
            let here = YAMLReader.child(place, index)
            guard
                let fields = reader.mapping(
                    item, here, allowed: ["name", "metric", "tenant", "plan", "quantity", "percent_of_free", "amount", "currency"])
            else { continue }
            var valid = true
            let name = fields.required("name", &reader).flatMap { reader.name($0, fields.place("name")) }
            if let name, !names.insert(name).inserted, let node = fields["name"] {
                reader.fail(fields.place("name"), node, "the alert '\(name)' is defined twice")
                valid = false
            }
            var metric: String?
            if let node = fields["metric"], let value = reader.name(node, fields.place("metric")) {
                if metrics.contains(where: { $0.name == value }) {
                    metric = value
                } else {
                    reader.fail(
                        fields.place("metric"), node, "unknown metric '\(value)'; metrics are: \(metrics.map(\.name).joined(separator: ", "))")
                    valid = false
                }
            } else if fields["metric"] != nil {
                valid = false
            }
            let tenant = fields["tenant"].flatMap { reader.text($0, fields.place("tenant")) }
            var plan: String?
            if let node = fields["plan"], let id = reader.name(node, fields.place("plan")) {
                if plans.contains(where: { $0.id == id }) {
                    plan = id
                } else {
                    reader.fail(fields.place("plan"), node, "unknown plan '\(id)'; plans are: \(plans.map(\.id).joined(separator: ", "))")
                    valid = false
                }
            }
            if fields["tenant"] != nil && fields["plan"] != nil {
                reader.fail(fields.place("plan"), fields["plan"], "give tenant or plan, not both")
                valid = false
            }
            let kinds = ["quantity", "percent_of_free", "amount"].filter { fields[$0] != nil }
            guard kinds.count == 1, let kind = kinds.first, let valueNode = fields[kind] else {
                reader.fail(
                    here, item,
                    kinds.isEmpty
                        ? "needs a threshold: quantity, percent_of_free or amount"
                        : "give one threshold, not \(kinds.joined(separator: " and "))")
                continue
            }
            if fields["currency"] != nil && kind != "amount" {
                reader.fail(fields.place("currency"), fields["currency"], "applies to an amount only")
                valid = false
            }
            if kind != "amount" && metric == nil && fields["metric"] == nil {
                reader.fail(fields.place("metric"), item, "is required for a \(kind) threshold")
                valid = false
            }
            var threshold: UsageAlertRule.Threshold?
            switch kind {
            case "quantity":
                if let quantity = reader.quantity(valueNode, fields.place(kind)) {
                    if quantity.nanos == 0 {
                        reader.fail(fields.place(kind), valueNode, "must be greater than 0")
                    } else {
                        threshold = .quantity(quantity)
                    }
                }
            case "percent_of_free":
                threshold = reader.integer(valueNode, fields.place(kind), range: 1...1000).map { .percentOfFree($0) }
            default:
                var currency: Currency?
                if let node = fields.required("currency", &reader), let code = reader.text(node, fields.place("currency")) {
                    currency = Currency(code: code)
                    if currency == nil {
                        reader.fail(fields.place("currency"), node, "unknown currency '\(code)'; expected an ISO 4217 code such as USD, EUR or JPY")
                    }
                }
                if let money = reader.money(valueNode, fields.place(kind), currency: currency) {
                    if money.scaledAmount == 0 {
                        reader.fail(fields.place(kind), valueNode, "must be greater than 0")
                    } else {
                        threshold = .amount(money)
                    }
                }
            }
            guard valid, let name, let threshold else { continue }
            result.append(UsageAlertRule(name: name, metric: metric, tenant: tenant, plan: plan, threshold: threshold))
        }
        return result
    }

    // MARK: Metrics

    private mutating func readMetrics(_ node: YAMLNode, _ place: String) -> [MetricDefinition] {
        guard let items = reader.list(node, place) else { return [] }
        var result: [MetricDefinition] = []
        for (index, item) in items.enumerated() {
            let here = YAMLReader.child(place, index)
            guard let fields = reader.mapping(item, here, allowed: ["name", "aggregation", "property", "group_by", "filters", "unit"])
            else { continue }
            guard let nameNode = fields.required("name", &reader), let name = reader.name(nameNode, fields.place("name")) else {
                continue
            }
            if result.contains(where: { $0.name == name }) {
                reader.fail(fields.place("name"), nameNode, "metric '\(name)' is defined twice")
                continue
            }
            var property: String?
            if let node = fields["property"] { property = reader.name(node, fields.place("property")) }
            var aggregation: Aggregation?
            if let node = fields.required("aggregation", &reader), let text = reader.text(node, fields.place("aggregation")) {
                switch text {
                case "sum": aggregation = .sum
                case "count": aggregation = .count
                case "max": aggregation = .max
                case "latest": aggregation = .latest
                case "min": aggregation = .min
                case "avg": aggregation = .average
                case "unique_count":
                    if let property {
                        aggregation = .uniqueCount(property: property)
                    } else if fields["property"] == nil {
                        reader.fail(
                            fields.place("property"), item,
                            "is required for aggregation unique_count (the property whose distinct values are counted)")
                    }
                default:
                    reader.fail(
                        fields.place("aggregation"), node, "unknown aggregation '\(text)'; expected sum, count, max, min, avg, unique_count or latest"
                    )
                }
                if text != "unique_count", let propertyNode = fields["property"] {
                    reader.fail(fields.place("property"), propertyNode, "applies only to aggregation unique_count")
                }
            }
            var groupBy: [String] = []
            if let node = fields["group_by"] { groupBy = reader.names(node, fields.place("group_by")) ?? [] }
            var filters: [MetricFilter] = []
            if let node = fields["filters"] { filters = readFilters(node, fields.place("filters")) }
            var unit: String?
            if let node = fields["unit"], let text = reader.text(node, fields.place("unit")) {
                if text.isEmpty || text.count > 16 || text.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) {
                    reader.fail(fields.place("unit"), node, "a unit is 1 to 16 printable characters, such as bytes, ms or calls")
                } else {
                    unit = text
                }
            }
            if let aggregation {
                result.append(MetricDefinition(name: name, aggregation: aggregation, groupBy: groupBy, filters: filters, unit: unit))
            }
        }
        return result
    }

    private mutating func readFilters(_ node: YAMLNode, _ place: String) -> [MetricFilter] {
        guard let items = reader.list(node, place) else { return [] }
        var result: [MetricFilter] = []
        for (index, item) in items.enumerated() {
            let here = YAMLReader.child(place, index)
            guard let fields = reader.mapping(item, here, allowed: ["property", "in", "not_in"]) else { continue }
            guard let propertyNode = fields.required("property", &reader),
                let property = reader.name(propertyNode, fields.place("property"))
            else { continue }
            switch (fields["in"], fields["not_in"]) {
            case (let values?, nil):
                if let list = reader.texts(values, fields.place("in")) {
                    result.append(MetricFilter(property: property, values: Set(list), included: true))
                }
            case (nil, let values?):
                if let list = reader.texts(values, fields.place("not_in")) {
                    result.append(MetricFilter(property: property, values: Set(list), included: false))
                }
            default:
                reader.fail(here, item, "a filter needs exactly one of 'in' or 'not_in'")
            }
        }
        return result
    }

    // MARK: Plans

    private mutating func readPlans(_ node: YAMLNode, _ place: String) -> [Plan] {
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

    private static let percentageKeys = ["percent", "fixed_fee", "minimum_per_event", "maximum_per_event"]
    private static let priceKeys = ["model", "unit_price", "tiers", "package_size", "package_price", "free"] + percentageKeys

    private mutating func readCharges(_ node: YAMLNode, _ place: String, currency: Currency?) -> ([UsageCharge], [FlatFee]) {
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
    private mutating func readPrice(_ fields: Fields, value: String?) -> PropertyPrice? {
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
    private mutating func readPercentage(_ fields: Fields) -> PercentagePrice? {
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
    private mutating func checkPercentage(_ price: PropertyPrice, metric: MetricDefinition, priceBy: String?, fields: Fields) {
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
    private mutating func readTiers(_ node: YAMLNode, _ place: String) -> [PriceTier]? {
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

    // MARK: Assignments

    private mutating func readAssignments(_ node: YAMLNode, _ place: String, plans: [Plan]) -> [PlanAssignment] {
        guard let items = reader.list(node, place) else { return [] }
        var result: [(index: Int, assignment: PlanAssignment)] = []
        for (index, item) in items.enumerated() {
            let here = YAMLReader.child(place, index)
            guard let fields = reader.mapping(item, here, allowed: ["tenant", "plan", "from", "until"]) else { continue }
            let tenant = fields.required("tenant", &reader).flatMap { reader.text($0, fields.place("tenant")) }
            var planID = fields.required("plan", &reader).flatMap { reader.name($0, fields.place("plan")) }
            if let id = planID, !plans.contains(where: { $0.id == id }), let node = fields["plan"] {
                reader.fail(fields.place("plan"), node, "unknown plan '\(id)'; plans are: \(plans.map(\.id).joined(separator: ", "))")
                planID = nil
            }
            let from = fields.required("from", &reader).flatMap { reader.time($0, fields.place("from")) }
            var until: EventTime?
            if let node = fields["until"] {
                until = reader.time(node, fields.place("until"))
                if let until, let from, until <= from {
                    reader.fail(fields.place("until"), node, "must be after from (\(from))")
                    continue
                }
            }
            guard let tenant, let planID, let from else { continue }
            let assignment = PlanAssignment(tenant: tenant, planID: planID, from: from, until: until)
            for earlier in result where earlier.assignment.tenant == tenant {
                let other = earlier.assignment
                if other.covers(from) || assignment.covers(other.from) {
                    reader.fail(
                        here, item,
                        "overlaps assignments[\(earlier.index)]: tenant '\(tenant)' would be on '\(other.planID)' and '\(planID)' at once")
                }
            }
            result.append((index, assignment))
        }
        return result.map { $0.assignment }
    }
}
