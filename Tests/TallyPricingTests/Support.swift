import Foundation
import TallyCore
@testable import TallyPricing

/// The metrics every test config starts with.
let testMetrics = """
    metrics:
      - name: api_calls
        aggregation: sum
        group_by: [endpoint, region]
      - name: bytes_out
        aggregation: sum
      - name: seats
        aggregation: max

    """

/// An engine for `plans` (YAML list items under `plans:`), with everyone on the first plan.
func engine(plans: String, defaultPlan: String = "p", assignments: String = "") throws -> PricingEngine {
    var yaml = testMetrics + "plans:\n" + plans + "\ndefault_plan: \(defaultPlan)\n"
    if !assignments.isEmpty { yaml += "assignments:\n" + assignments }
    return PricingEngine(config: try PricingConfigLoader.load(yaml: yaml, file: "test.yaml"))
}

func q(_ text: String) -> Quantity {
    do { return try Quantity(parsing: text) } catch { fatalError("bad test quantity \(text)") }
}

func time(_ text: String) -> EventTime {
    do { return try EventTime(parsing: text) } catch { fatalError("bad test time \(text)") }
}

let april = BillingPeriod(year: 2026, month: 4)!
let march = BillingPeriod(year: 2026, month: 3)!

/// The pricing error a throwing body threw, or nil.
func pricingError(_ body: () throws -> Void) -> PricingError? {
    do {
        try body()
        return nil
    } catch let error as PricingError {
        return error
    } catch {
        return nil
    }
}

func configIssues(_ yaml: String) -> [PricingConfigIssue] {
    do {
        _ = try PricingConfigLoader.load(yaml: yaml, file: "bad.yaml")
        return []
    } catch {
        return error.issues
    }
}

extension Invoice {
    func line(_ description: String) -> InvoiceLine? { lines.first { $0.description == description } }
}
