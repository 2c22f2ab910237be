public import ArgumentParser
import Foundation
import TallyCollector
import TallyCore

/// `tallyctl trace`: where one event is — stored and billed on which invoice line, a duplicate
/// of which arrival, refused and why, or never received — from the collector's
/// `GET /v1/events/trace` (the collector knows the pricing and the late window in force).
public struct TraceCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "trace",
        abstract: "Trace one event to its invoice line, or to the reason it is not billed.",
        discussion: """
            Searches the tenant's events by the id the API server gave them (--id) or by fingerprint \
            (--fingerprint, see `tallyctl fingerprint`), over the event times of --period, or --from and --to \
            (default: the previous and the current period). Exit 0 when the collector holds the event \
            (stored or refused), 1 when it never received it.
            """)
    @OptionGroup var global: GlobalOptions
    @OptionGroup var http: CollectorHTTPOptions
    @Option(help: "The tenant.") var tenant: String
    @Option(help: "The event's id (\"id\" in its JSON).") var id: String?
    @Option(help: "The event's fingerprint, 32 hex digits.") var fingerprint: String?
    @Option(help: "Search the event times of this period, YYYY-MM.") var period: String?
    @Option(help: "Search event times from this instant, RFC 3339.") var from: String?
    @Option(help: "Search event times before this instant, RFC 3339.") var to: String?
    @Flag(help: "Print the API's JSON instead of text.") var json = false
    public init() {}

    public func validate() throws {
        try http.validate()
        guard (id == nil) != (fingerprint == nil) else { throw ValidationError("give --id or --fingerprint (one of them)") }
        if let period, BillingPeriod(period) == nil { throw ValidationError("--period '\(period)' is not YYYY-MM") }
        if period != nil, from != nil || to != nil { throw ValidationError("give --period, or --from and --to, not both") }
    }

    public func run() async throws {
        let body = try await http.get(
            "/v1/events/trace"
                + queryString([
                    ("tenant", tenant), ("id", id), ("fingerprint", fingerprint), ("period", period), ("from", from), ("to", to),
                ]))
        let report = try JSONDecoder().decode(EventTraceReport.self, from: Data(body.utf8))
        if json {
            print(body)
        } else {
            print(Self.text(report), terminator: "")
        }
        if !report.found { throw ExitCode(1) }
    }

    /// The report for a person: one block per stored event, then the refusals.
    static func text(_ report: EventTraceReport) -> String {
        var out = ""
        func line(_ text: String = "") { out += text + "\n" }
        let key = report.searched.id.map { "id \($0)" } ?? "fingerprint \(report.searched.fingerprint ?? "")"
        line("trace of \(key), tenant \(report.searched.tenant), event times [\(report.searched.from), \(report.searched.to))")
        if !report.found {
            line(report.summary)
            return out
        }
        for event in report.events {
            line()
            line("event \(event.fingerprint) (\(event.canonicalForm == "id" ? "keyed by id" : "keyed by every field"))")
            line("  \(event.metric) \(event.quantity) at \(event.timestamp)")
            if !event.properties.isEmpty {
                line("  properties: " + event.properties.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))
            }
            line("  outcome: \(event.explanation)")
            let first = event.firstArrival
            line("  received \(event.received)×: first from \(first.agent) batch \(first.batch) #\(first.index) at \(first.receivedAt)")
            for copy in event.duplicates {
                line("    duplicate from \(copy.agent) batch \(copy.batch) #\(copy.index) at \(copy.receivedAt)")
            }
            if !event.cells.isEmpty {
                line("  counted in:")
                for cell in event.cells {
                    let group = cell.dimension.map { " \($0)=\(cell.value ?? "")" } ?? " total"
                    let billed = cell.billedIn.map { ", billed in \($0)" } ?? ""
                    line("    \(cell.grain) \(cell.bucket)\(group)\(billed): sum \(cell.sum), \(cell.count) events")
                }
            }
            line("  billing: \(event.billing)")
            for invoiceLine in event.invoiceLines {
                line(
                    "    \(invoiceLine.status) \(invoiceLine.period) invoice, plan \(invoiceLine.plan): \(invoiceLine.description) "
                        + "\(invoiceLine.quantity) → \(invoiceLine.amount) \(invoiceLine.currency)")
            }
        }
        for refusal in report.refusals {
            line()
            let field = refusal.field.map { " (\($0))" } ?? ""
            line("refused: \(refusal.reason)\(field): \(refusal.message)")
            let arrival = refusal.arrival
            line("  from \(arrival.agent) batch \(arrival.batch) #\(arrival.index) at \(arrival.receivedAt)")
        }
        return out
    }
}
