public import ArgumentParser
import Foundation
import TallyCollector
import TallyCore

/// `tallyctl correct`: void or amend an event (or every event a filter selects) through the
/// collector's `POST /v1/corrections`, with a reason; `--dry-run` shows what would change.
public struct CorrectCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "correct",
        abstract: "Void or amend events, with a reason and an audit trail (admin key).",
        discussion: """
            One event: --tenant and --id (or --fingerprint), searched over --period or --from/--to like `tallyctl trace`. \
            Many: --tenant with --where-from and --where-to (and --metric, --where NAME=VALUE). --void takes the events \
            out of billing; --quantity and --property NAME=VALUE (repeatable: the new set of properties) amend them. \
            --correction-key makes the order idempotent: run it again and nothing is applied twice. The raw events are never \
            changed; a closed period's difference is billed on the next open invoice.
            """)
    @OptionGroup var global: GlobalOptions
    @OptionGroup var http: CollectorHTTPOptions
    @Option(help: "The correction's idempotency key (your ticket number, say).") var correctionKey: String
    @Option(help: "Why: it is shown on the invoice.") var reason: String
    @Option(help: "The tenant.") var tenant: String
    @Option(help: "The event's id.") var id: String?
    @Option(help: "The event's fingerprint, 32 hex digits.") var fingerprint: String?
    @Option(help: "Search the event times of this period, YYYY-MM (one event).") var period: String?
    @Option(help: "Search event times from this instant, RFC 3339 (one event).") var from: String?
    @Option(help: "Search event times before this instant, RFC 3339 (one event).") var to: String?
    @Option(help: "Every event from this instant, RFC 3339 (a filter).") var whereFrom: String?
    @Option(help: "Every event before this instant, RFC 3339 (a filter).") var whereTo: String?
    @Option(help: "Only this metric's events (a filter).") var metric: String?
    @Option(name: .customLong("where"), help: "Only events with this property value, NAME=VALUE (a filter; repeatable).")
    var matches: [String] = []
    @Flag(help: "Void the events.") var void = false
    @Option(help: "Amend: the new quantity.") var quantity: String?
    @Option(name: .customLong("property"), help: "Amend: a property of the new set, NAME=VALUE (repeatable).") var properties: [String] = []
    @Flag(help: "Show what would change; write nothing.") var dryRun = false
    @Flag(help: "Print the API's JSON instead of text.") var json = false
    public init() {}

    var isFilter: Bool { whereFrom != nil || whereTo != nil || metric != nil || !matches.isEmpty }

    public func validate() throws {
        try http.validate()
        guard void != (quantity != nil || !properties.isEmpty) else {
            throw ValidationError("give --void, or --quantity and/or --property to amend (not both)")
        }
        if isFilter {
            guard id == nil, fingerprint == nil, period == nil, from == nil, to == nil else {
                throw ValidationError("give one event (--id or --fingerprint) or a filter (--where-from, --where-to ...), not both")
            }
            guard whereFrom != nil, whereTo != nil else { throw ValidationError("a filter needs --where-from and --where-to") }
        } else {
            guard (id == nil) != (fingerprint == nil) else { throw ValidationError("give --id or --fingerprint (one of them), or a filter") }
        }
        for pair in matches + properties where !pair.contains("=") { throw ValidationError("'\(pair)' is not NAME=VALUE") }
    }

    /// `NAME=VALUE` items as a JSON object of strings.
    static func pairs(_ items: [String]) -> String {
        JSONWriter.object(
            items.map { item in
                let parts = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                return (key: String(parts[0]), value: JSONWriter.quoted(parts.count > 1 ? String(parts[1]) : ""))
            })
    }

    public func run() async throws {
        var members: [(key: String, value: String)] = [
            ("key", JSONWriter.quoted(correctionKey)), ("reason", JSONWriter.quoted(reason)), ("tenant", JSONWriter.quoted(tenant)),
            ("action", JSONWriter.quoted(void ? "void" : "amend")), ("dryRun", dryRun ? "true" : "false"),
        ]
        if let quantity { members.append(("quantity", JSONWriter.quoted(quantity))) }
        if !properties.isEmpty { members.append(("properties", Self.pairs(properties))) }
        if isFilter {
            var filter: [(key: String, value: String)] = [("from", JSONWriter.quoted(whereFrom ?? "")), ("to", JSONWriter.quoted(whereTo ?? ""))]
            if let metric { filter.append(("metric", JSONWriter.quoted(metric))) }
            if !matches.isEmpty { filter.append(("properties", Self.pairs(matches))) }
            members.append(("filter", JSONWriter.object(filter)))
        } else {
            for (name, value) in [("id", id), ("fingerprint", fingerprint), ("period", period), ("from", from), ("to", to)] {
                if let value { members.append((name, JSONWriter.quoted(value))) }
            }
        }
        let body = try await http.send("POST", "/v1/corrections", json: JSONWriter.object(members))
        if json {
            print(body)
            return
        }
        let answer = try JSONDecoder().decode(CorrectionAnswer.self, from: Data(body.utf8))
        let verb = answer.dryRun ? "would correct" : "corrected"
        print("\(verb) \(answer.dryRun ? answer.matched : answer.applied) of \(answer.matched) events")
        for correction in answer.corrections {
            let change = correction.quantityAfter.map { "\(correction.quantityBefore) → \($0)" } ?? "\(correction.quantityBefore) → void"
            let billed = correction.billedIn.map { "difference billed in \($0)" } ?? "in its open period \(correction.period)"
            let again = correction.alreadyApplied ? " (already applied)" : ""
            print("  \(correction.metric) at \(correction.timestamp) \(correction.fingerprint): \(change), \(billed)\(again)")
        }
        for delta in answer.deltas { print("  \(delta.metric): \(delta.quantity)") }
    }
}
