public import ArgumentParser
import Foundation
import TallyCore
import TallyLedger

/// `tallyctl alerts`: every usage alert recorded in the ledger — which tenant crossed which
/// threshold in which period, what was observed, and whether the webhook was delivered (with
/// attempts and the receiver's last answer) — by period, tenant and alert.
public struct AlertsCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "alerts", abstract: "List the usage alerts (thresholds crossed) and their webhooks, from the ledger.")
    @OptionGroup var global: GlobalOptions
    @Option(help: "The ledger: sqlite:PATH or postgres://USER@HOST:PORT/DATABASE.") var store = "sqlite:./tally-data/ledger.db"
    @Option(help: "Only this tenant.") var tenant: String?
    @Option(help: "Only this billing period (YYYY-MM).") var period: String?
    @Flag(help: "Only alerts whose webhook is not delivered yet.") var pending = false
    public init() {}

    public func validate() throws {
        do { _ = try StoreAddress(parsing: store) } catch { throw ValidationError("--store: \(error)") }
        if let period, BillingPeriod(period) == nil { throw ValidationError("--period: '\(period)' is not a month: use YYYY-MM") }
    }

    public func run() async throws {
        if case .sqlite(let path) = try StoreAddress(parsing: store), !FileManager.default.fileExists(atPath: path) {
            throw RuntimeFailure("no ledger at \(path)")
        }
        let writer = try openLedger(store, groupBy: [])
        let only = tenant
        let month = period.flatMap(BillingPeriod.init)
        let records = try await writer.perform { store throws(LedgerError) in try store.alertRecords(tenant: only, period: month) }
        await writer.shutdown()
        print(Self.table(records.filter { !pending || $0.status == .pending }), terminator: "")
    }

    /// One line per alert, tab-separated, with a header.
    static func table(_ records: [AlertRecord]) -> String {
        var out =
            [
                "period", "tenant", "alert", "metric", "kind", "threshold", "observed", "crossed_at", "status", "attempts", "delivered_at",
                "answer", "id",
            ].joined(separator: "\t") + "\n"
        for record in records {
            let answer = (record.lastError ?? "").replacingOccurrences(of: "\n", with: " ").replacingOccurrences(of: "\t", with: " ")
            out +=
                [
                    record.period.description, record.tenant, record.alert, record.metric ?? "", record.kind, record.threshold, record.observed,
                    "\(record.crossedAt)", record.status.rawValue, String(record.attempts), record.deliveredAt.map { "\($0)" } ?? "", answer,
                    record.identifier,
                ].joined(separator: "\t") + "\n"
        }
        return out
    }
}
