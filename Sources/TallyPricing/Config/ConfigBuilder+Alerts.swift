import TallyConfig
import TallyCore

/// The `alerts:` section of a pricing file: usage alert thresholds.
extension ConfigBuilder {
    // MARK: Alerts

    /// Usage alert thresholds: a unique name, exactly one of `quantity`, `percent_of_free` and
    /// `amount` (with its `currency`), the metric (required but for an amount on the invoice
    /// total), and optionally one tenant or one plan.
    mutating func readAlerts(_ node: YAMLNode, _ place: String, plans: [Plan]) -> [UsageAlertRule] {
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
}
