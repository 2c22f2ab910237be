import Foundation
import TallyCore
import TallyLedger
import TallyWorkload
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// The checks after a chaos run's drain, against the oracle's truth alone:
/// - every collector's usage (`GET /v1/usage`, per tenant, metric and period) equals the truth,
///   count and sum, exactly;
/// - every tenant's invoice equals the truth's, priced with the same plan (`tallyctl compare`);
/// - every acknowledged event is in the raw ledger exactly once, and nothing else is;
/// - reconciliation balances per agent, tenant and period (`received = accepted + duplicate + late
///   + rejected`), nothing is late or rejected, every agent's received covers what it
///   acknowledged, and the accepted total is the number of acknowledged events;
/// - `tallyctl audit` finds no drift; every process stops cleanly on SIGTERM.
struct ChaosVerdict {
    struct Discrepancy: CustomStringConvertible {
        let kind: String
        let count: Int
        let example: String
        var description: String { "\(kind): \(count) (e.g. \(example))" }
    }

    var discrepancies: [Discrepancy] = []
    var eventsAcknowledged = 0
    var eventsBilled = 0
    var duplicatesExplained: Int64 = 0

    var discrepancyCount: Int { discrepancies.reduce(0) { $0 + $1.count } }

    private mutating func found(_ kind: String, _ count: Int, _ example: @autoclosure () -> String) {
        if count > 0 { discrepancies.append(Discrepancy(kind: kind, count: count, example: example())) }
    }

    static func check(fleet: ChaosFleet, oracle: ChaosOracle, undrained: [String]) async throws -> ChaosVerdict {
        var verdict = ChaosVerdict()
        verdict.found("spools not drained", undrained.count, undrained.first ?? "")
        let acknowledged = oracle.acknowledged
        let sent = oracle.sent
        let truth = try oracle.truth()
        verdict.eventsAcknowledged = acknowledged.count
        let unanswered = sent.keys.filter { acknowledged[$0] == nil }
        verdict.found("events never acknowledged (the writers gave up)", unanswered.count, unanswered.first ?? "")

        // Usage, through every collector's HTTP API.
        let current = BillingPeriod(containing: .now())
        let periods = Set(truth.keys.map(\.period)).union([current]).sorted()
        for (index, slot) in fleet.collectors.enumerated() {
            var billed = 0
            var wrong: [String] = []
            for tenant in ChaosTraffic.tenants {
                for metric in ChaosTraffic.metrics {
                    let answer = try await usage(port: slot.httpPort, tenant: tenant, metric: metric, from: periods[0], to: current)
                    var expected = truth.filter { $0.key.tenant == tenant && $0.key.metric == metric }
                    for bucket in answer {
                        billed += bucket.count
                        let cell = TruthCell(tenant: tenant, metric: metric, period: bucket.period)
                        let want = expected.removeValue(forKey: cell)
                        if want?.count != bucket.count || want?.sum != bucket.sum {
                            wrong.append(
                                "\(tenant) \(metric) \(bucket.period): billed \(bucket.count) events, \(bucket.sum); truth \(want?.count ?? 0), \(want?.sum ?? .zero)"
                            )
                        }
                    }
                    for (cell, want) in expected where want.count > 0 {
                        wrong.append("\(tenant) \(metric) \(cell.period): nothing billed; truth \(want.count) events, \(want.sum)")
                    }
                }
            }
            if index == 0 { verdict.eventsBilled = billed }
            verdict.found("usage cells unequal to the truth (collector \(index))", wrong.count, wrong.first ?? "")
        }

        let unclean = await fleet.stopAll()
        verdict.found("processes that did not stop cleanly", unclean.count, unclean.first ?? "")

        // The audit and the invoices, by tallyctl, as an operator would.
        let audit = try await BinaryRunner.run("tallyctl", ["audit", "--store", fleet.store], unprivileged: true)
        let drifted = audit.stdoutText.firstMatch(of: #/: ([0-9]+) drifted/#).flatMap { Int($0.1) }
        verdict.found(
            "tallyctl audit drift", audit.status == 0 && drifted == 0 ? 0 : max(drifted ?? 1, 1), String(audit.stdoutText.suffix(600)) + audit.stderr)
        verdict.found("invoices unequal to the truth's", try await invoiceMismatches(fleet: fleet, truth: truth), "see tallyctl compare above")

        // The raw ledger: each acknowledged event once, nothing else.
        let store = try LedgerStores.open(fleet.store, configuration: LedgerConfiguration())
        defer { store.close() }
        var stored: [String: Int] = [:]
        for period in periods {
            try store.scanRawEvents(tenant: nil, period: period) { record in stored[record.event.id ?? "(no id)", default: 0] += 1 }
        }
        let missing = acknowledged.keys.filter { stored[$0] == nil }
        verdict.found("acknowledged events missing from the ledger", missing.count, missing.first ?? "")
        let twice = stored.filter { $0.value > 1 }
        verdict.found("events stored more than once", twice.count, twice.first.map { "\($0.key) × \($0.value)" } ?? "")
        let unknown = stored.keys.filter { acknowledged[$0] == nil }
        verdict.found("stored events nobody acknowledged", unknown.count, unknown.first ?? "")

        // Reconciliation.
        let rows = try store.reconciliation(ReconciliationFilter())
        let unbalanced = rows.filter { !$0.counts.balances }
        verdict.found("reconciliation rows that do not balance", unbalanced.count, unbalanced.first.map { "\($0)" } ?? "")
        let total = rows.total
        verdict.duplicatesExplained = total.duplicate
        verdict.found("events counted late or rejected", Int(total.late + total.rejected), "\(total)")
        verdict.found(
            "accepted total unequal to the acknowledged events", total.accepted == Int64(acknowledged.count) ? 0 : 1,
            "accepted \(total.accepted), acknowledged \(acknowledged.count)")
        for agent in fleet.agentPorts.indices {
            let received = rows.filter { $0.agent == "chaos-edge-\(agent)" }.total.received
            let acked = oracle.acknowledged(by: agent).count
            verdict.found(
                "agents that acknowledged more events than the collector received from them", received >= Int64(acked) ? 0 : 1,
                "agent \(agent): received \(received), acknowledged \(acked)")
        }
        return verdict
    }

    struct UsageBucket {
        let period: BillingPeriod
        let count: Int
        let sum: Quantity
    }

    /// Monthly usage buckets of one tenant and metric from `from` to the end of `to`.
    private static func usage(port: Int, tenant: String, metric: String, from: BillingPeriod, to: BillingPeriod) async throws -> [UsageBucket] {
        let query = "tenant=\(tenant)&metric=\(metric)&granularity=month&from=\(from.start)&to=\(to.end)"
        guard let url = URL(string: "http://127.0.0.1:\(port)/v1/usage?\(query)") else { throw HarnessError("bad usage URL: \(query)") }
        // A collector whose database was just restarted answers 5xx until its pool reconnects:
        // poll up to 60 s for a 200, as a dashboard would.
        let deadline = ContinuousClock.now + .seconds(60)
        var (data, response) = try await URLSession.shared.data(from: url)
        while (response as? HTTPURLResponse)?.statusCode ?? 0 >= 500, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(250))
            (data, response) = try await URLSession.shared.data(from: url)
        }
        guard (response as? HTTPURLResponse)?.statusCode == 200,
            let object = try JSONSerialization.jsonObject(with: data) as? [String: Any],
            let buckets = object["buckets"] as? [[String: Any]]
        else { throw HarnessError("GET /v1/usage?\(query): \(String(decoding: data, as: UTF8.self))") }
        return try buckets.map { bucket in
            guard let start = bucket["start"] as? String, let count = bucket["count"] as? Int, let sum = bucket["sum"] as? String else {
                throw HarnessError("usage bucket without start, count or sum: \(bucket)")
            }
            return UsageBucket(period: BillingPeriod(containing: try EventTime(parsing: start)), count: count, sum: try Quantity(parsing: sum))
        }
    }

    /// How many tenant invoices `tallyctl compare` finds unequal to the truth priced with the same plan.
    private static func invoiceMismatches(fleet: ChaosFleet, truth: [TruthCell: (count: Int, sum: Quantity)]) async throws -> Int {
        let rows = truth.keys.sorted().map { cell in
            ExpectedTotals.Row(
                tenant: cell.tenant, metric: cell.metric, period: cell.period, quantity: truth[cell]?.sum ?? .zero, count: truth[cell]?.count ?? 0)
        }
        let count = rows.reduce(0) { $0 + $1.count }
        let expected = ExpectedTotals(
            workload: WorkloadConfiguration(seed: 0, events: count, retriesPerMillion: 0, latePerMillion: 0, invalidPerMillion: 0),
            summary: .init(lines: count, uniqueEvents: count, retries: 0, late: 0, invalid: 0, invalidByKind: [:]), totals: rows)
        let file = fleet.directory.appendingPathComponent("truth.json").path
        try expected.write(to: file)
        let pricing = fleet.directory.appendingPathComponent("pricing.yaml").path
        let compare = try await BinaryRunner.run(
            "tallyctl", ["compare", "--expect", file, "--store", fleet.store, "--pricing", pricing, "--top", "0"], unprivileged: true)
        guard let match = compare.stdoutText.firstMatch(of: #/([0-9]+) of ([0-9]+) tenant invoices equal/#), let equal = Int(match.1),
            let all = Int(match.2)
        else { throw HarnessError("tallyctl compare: \(compare.stdoutText)\(compare.stderr)") }
        if equal != all { print(compare.stdoutText) }
        return all - equal
    }
}
