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
    var metrics: [MetricDefinition] = []

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

    // MARK: Assignments

    mutating func readAssignments(_ node: YAMLNode, _ place: String, plans: [Plan]) -> [PlanAssignment] {
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
