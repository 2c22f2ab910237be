public import ArgumentParser
import TallyCollector
import TallyCore
import TallyLedger
import TallyPricing
import TallyWorkload

/// `tallyctl compare`: prices the generator's expected totals and the ledger's aggregates with the
/// same plan, tenant by tenant, and reports every difference — the demo's proof that what was
/// sent is what is billed.
public struct CompareCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "compare",
        abstract: "Compare every tenant's invoice in a ledger with the totals `tallyctl gen --expect` wrote.")

    @Option(help: "The expected totals file from `tallyctl gen --expect`.") var expect: String
    @Option(help: "The ledger: sqlite:PATH or postgres://USER@HOST:PORT/DATABASE.") var store: String
    @Option(help: "The pricing YAML file.") var pricing: String
    @Option(help: "How many of the largest tenants to list.") var top: Int = 5

    public init() {}

    public func validate() throws {
        do { _ = try StoreAddress(parsing: store) } catch { throw ValidationError("--store: \(error)") }
        guard top >= 0 else { throw ValidationError("--top must not be negative") }
    }

    public func run() async throws {
        let expected = try ExpectedTotals.read(from: expect)
        let config = try PricingConfigLoader.load(file: pricing)
        let engine = PricingEngine(config: config)
        let aggregatePricing = AggregatePricing(config: config)
        let ledger = try LedgerStores.open(store, configuration: LedgerConfiguration())
        defer { ledger.close() }

        var usage: [String: [BillingPeriod: [UsageKey: Quantity]]] = [:]
        for row in expected.totals {
            let key = UsageKey(metric: row.metric)
            usage[row.tenant, default: [:]][row.period, default: [:]][key] =
                try (usage[row.tenant]?[row.period]?[key] ?? .zero).adding(row.quantity)
        }
        var rows: [(tenant: String, period: BillingPeriod, expected: Money, billed: Money)] = []
        for (tenant, periods) in usage {
            for (period, quantities) in periods {
                let expectedInvoice = try engine.invoice(tenant: tenant, period: period, usage: quantities)
                let billedInvoice = try aggregatePricing.invoice(store: ledger, tenant: tenant, period: period)
                rows.append((tenant, period, expectedInvoice.total, billedInvoice.total))
            }
        }
        rows.sort { ($0.expected, $1.tenant) > ($1.expected, $0.tenant) }
        let mismatches = rows.filter { $0.expected != $0.billed }
        print("tenant      period   expected         invoiced         match")
        for row in rows.prefix(top) + mismatches.prefix(20) {
            let pad = { (text: String, width: Int) in text + String(repeating: " ", count: max(1, width - text.count)) }
            print(
                pad(row.tenant, 12) + pad(row.period.description, 9) + pad(row.expected.description, 17)
                    + pad(row.billed.description, 17) + (row.expected == row.billed ? "yes" : "NO"))
        }
        print("\(rows.count - mismatches.count) of \(rows.count) tenant invoices equal the generator's expected totals")
        if !mismatches.isEmpty { throw ExitCode(1) }
    }
}
