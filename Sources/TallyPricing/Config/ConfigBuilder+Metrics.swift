import TallyConfig
import TallyCore

/// The `metrics:` section of a pricing file: aggregations, group-by properties and filters.
extension ConfigBuilder {
    // MARK: Metrics

    mutating func readMetrics(_ node: YAMLNode, _ place: String) -> [MetricDefinition] {
        guard let items = reader.list(node, place) else { return [] }
        var result: [MetricDefinition] = []
        for (index, item) in items.enumerated() {
            let here = YAMLReader.child(place, index)
            guard let fields = reader.mapping(item, here, allowed: ["name", "aggregation", "property", "per", "group_by", "filters", "unit"])
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
                case "weighted_sum":
                    var per = LevelTimeUnit.hour
                    if let perNode = fields["per"], let perText = reader.text(perNode, fields.place("per")) {
                        if let unit = LevelTimeUnit(rawValue: perText) {
                            per = unit
                        } else {
                            reader.fail(fields.place("per"), perNode, "unknown time unit '\(perText)'; expected second, minute, hour or day")
                        }
                    }
                    aggregation = .weightedSum(per: per)
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
                        fields.place("aggregation"), node,
                        "unknown aggregation '\(text)'; expected sum, count, max, min, avg, weighted_sum, unique_count or latest"
                    )
                }
                if text != "unique_count", let propertyNode = fields["property"] {
                    reader.fail(fields.place("property"), propertyNode, "applies only to aggregation unique_count")
                }
                if text != "weighted_sum", let perNode = fields["per"] {
                    reader.fail(fields.place("per"), perNode, "applies only to aggregation weighted_sum")
                }
            }
            var groupBy: [String] = []
            if let node = fields["group_by"] { groupBy = reader.names(node, fields.place("group_by")) ?? [] }
            var filters: [MetricFilter] = []
            if let node = fields["filters"] { filters = readFilters(node, fields.place("filters")) }
            // A level is one series per tenant and metric: a group or a filter would need one
            // series per property value (define one metric per value instead).
            if aggregation?.isLevel == true {
                for key in ["group_by", "filters"] {
                    if let node = fields[key] {
                        reader.fail(
                            fields.place(key), node,
                            "does not apply to aggregation weighted_sum: each tenant has one level per metric; send one metric per level instead")
                    }
                }
            }
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

    mutating func readFilters(_ node: YAMLNode, _ place: String) -> [MetricFilter] {
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
}
