public import ArgumentParser
import Foundation
import NIOCore
import TallyClient
import TallyCollector
import TallyConfig
import TallyCore
import TallyLedger
import TallyPricing
import TallyTLS

/// Where the collector's HTTP API is, the key to read it with, and how to trust it.
public struct CollectorHTTPOptions: ParsableArguments {
    @Option(help: "The collector's HTTP API, HOST:PORT (plain HTTP, loopback) or https://HOST:PORT.")
    public var collectorHttp = "127.0.0.1:7480"
    @Option(help: "An API key (admin or tenant); none for loopback reads on a collector without an admin key.")
    public var key: String?
    @OptionGroup public var trust: HTTPSTrustOptions
    public init() {}

    public func validate() throws {
        if !collectorHttp.hasPrefix("https://") { try checkAddress(collectorHttp, "--collector-http") }
    }

    /// GETs `path` and returns the body, or fails with the API's error message.
    func get(_ path: String) async throws -> String { try await send("GET", path) }

    /// Sends `method` to `path` with a JSON `body`, returns the answer's body, or fails with the
    /// API's error message.
    func send(_ method: String, _ path: String, json body: String? = nil) async throws -> String {
        var headers = key.map { [("Authorization", "Bearer \($0)")] } ?? []
        if body != nil { headers.append(("Content-Type", "application/json")) }
        let base = collectorHttp.hasPrefix("https://") ? collectorHttp : "http://\(collectorHttp)"
        let tls = try trust.clientTLS()
        let reply: HTTPExchange.Response
        do {
            let target = try HTTPExchange.Target(url: base + path)
            reply = try await HTTPExchange(url: target, tls: tls, allowPlaintextRemote: trust.allowPlaintextRemote)
                .request(method: method, path: target.path, headers: headers, body: body.map { ByteBuffer(string: $0) })
        } catch {
            throw RuntimeFailure("cannot reach the collector at \(collectorHttp): \(error)")
        }
        guard reply.status == 200 else {
            throw RuntimeFailure("the collector answered \(reply.status): \(reply.text.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        return reply.text
    }
}

/// How `tallyctl` trusts an `https://` server (the collector's API, a billing platform), and
/// whether plain HTTP may go to a host not on loopback.
public struct HTTPSTrustOptions: ParsableArguments {
    @Option(help: "Trust this CA (PEM) for https:// (default: the system's trust store).") public var tlsCa: String?
    @Flag(help: "Allow plain http:// to hosts not on loopback (clear text on the network).")
    public var allowPlaintextRemote = false
    public init() {}

    /// The TLS of `https://` requests; nil: the system's trust store.
    func clientTLS() throws -> ClientTLS? {
        do {
            return try tlsCa.map { path throws(TLSSetupError) in try ClientTLS(ClientTLSFiles(ca: path), place: "--tls-ca") }
        } catch {
            throw RuntimeFailure("cannot set up TLS: \(error)")
        }
    }
}

func queryString(_ items: [(String, String?)]) -> String {
    let present = items.compactMap { name, value in value.map { "\(name)=\(MeterEventExporter.formEncode($0))" } }
    return present.isEmpty ? "" : "?" + present.joined(separator: "&")
}

/// `tallyctl usage`: a tenant's usage, a period's CSV report, and exports to a billing platform.
public struct UsageCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "usage", abstract: "Show usage, print a period's usage report, export usage to a billing platform.",
        subcommands: [Show.self, Report.self, Export.self, Exports.self], defaultSubcommand: Show.self)
    public init() {}

    /// `tallyctl usage [show]`: usage buckets from the collector's API (from the aggregates).
    public struct Show: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(commandName: "show", abstract: "Show a tenant's usage of one metric.")
        @OptionGroup var global: GlobalOptions
        @OptionGroup var http: CollectorHTTPOptions
        @Option(help: "The tenant.") var tenant: String
        @Option(help: "The metric.") var metric: String
        @Option(help: "Start, RFC 3339 (default: the current period's start).") var from: String?
        @Option(help: "End, RFC 3339, exclusive (default: the current period's end).") var to: String?
        @Option(help: "hour, day or month.") var granularity = "day"
        @Option(help: "A group-by property.") var groupBy: String?
        @Flag(help: "Print the API's JSON instead of a table.") var json = false
        public init() {}

        public func validate() throws {
            try http.validate()
            guard ["hour", "day", "month"].contains(granularity) else { throw ValidationError("--granularity must be hour, day or month") }
        }

        public func run() async throws {
            let body = try await http.get(
                "/v1/usage"
                    + queryString([
                        ("tenant", tenant), ("metric", metric), ("from", from), ("to", to), ("granularity", granularity), ("group_by", groupBy),
                    ]))
            if json {
                print(body)
                return
            }
            struct Answer: Decodable {
                struct Bucket: Decodable {
                    var start: String
                    var group: String?
                    var sum: String
                    var count: Int64
                }
                var buckets: [Bucket]
            }
            let answer = try JSONDecoder().decode(Answer.self, from: Data(body.utf8))
            print(["start", "group", "sum", "events"].joined(separator: "\t"))
            for bucket in answer.buckets {
                print([bucket.start, bucket.group ?? "", bucket.sum, String(bucket.count)].joined(separator: "\t"))
            }
        }
    }

    /// `tallyctl usage report PERIOD`: the CSV usage report of a period.
    public struct Report: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(commandName: "report", abstract: "Print a period's usage report as CSV.")
        @OptionGroup var global: GlobalOptions
        @OptionGroup var http: CollectorHTTPOptions
        @Argument(help: "The period, YYYY-MM.") var period: String
        public init() {}
        public func validate() throws {
            try http.validate()
            guard BillingPeriod(period) != nil else { throw ValidationError("'\(period)' is not a period: use YYYY-MM") }
        }
        public func run() async throws { print(try await http.get("/v1/reports/\(period).csv"), terminator: "") }
    }

    /// `tallyctl usage export`: pushes a period's closed hours to a billing platform.
    public struct Export: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(
            commandName: "export", abstract: "Send a period's hourly usage as Stripe meter events (idempotent; safe to rerun).")
        @OptionGroup var global: GlobalOptions
        @Option(help: "The ledger: sqlite:PATH or postgres://USER@HOST:PORT/DATABASE.") var store = "sqlite:./tally-data/ledger.db"
        @Option(help: "The pricing YAML file (which metrics, filters).") var pricing: String
        @Option(help: "The platform's base URL, https://HOST[:PORT] (http:// for a loopback mock or proxy).") var baseURL: String
        @Option(help: "The platform's API key.") var apiKey: String?
        @OptionGroup var trust: HTTPSTrustOptions
        @Option(help: "The period, YYYY-MM (default: the current one).") var period: String?
        @Option(help: "Only this tenant.") var tenant: String?
        public init() {}

        public func run() async throws {
            let config = try PricingConfigLoader.load(file: pricing)
            let aggregate = AggregatePricing(config: config)
            let writer = try openLedger(store, configuration: AggregatePricing.ledgerConfiguration(for: config))
            let service = Invoicing(ledger: writer, pricing: aggregate, lateWindow: .standard)
            let now = EventTime.now()
            let chosen =
                try period.map { (text: String) throws -> BillingPeriod in
                    guard let value = BillingPeriod(text) else { throw ValidationError("'\(text)' is not a period: use YYYY-MM") }
                    return value
                } ?? BillingPeriod(containing: now)
            let exporter = MeterEventExporter(
                service: service,
                settings: .init(
                    baseURL: baseURL, apiKey: apiKey, tls: try trust.clientTLS(), allowPlaintextRemote: trust.allowPlaintextRemote))
            let report = try await exporter.export(period: chosen, tenants: tenant.map { [$0] }, now: now)
            await writer.shutdown()
            print("sent \(report.sent), already sent \(report.alreadySent), failed \(report.failed), requests \(report.requests)")
            if report.failed > 0 { throw RuntimeFailure("\(report.failed) records were not acknowledged; rerun to retry them") }
        }
    }
}

extension UsageCommand {
    /// `tallyctl usage exports`: every push to the billing platform recorded in the ledger —
    /// what (tenant, metric, hour, value, identifier), its state, attempts, when it was
    /// acknowledged and the platform's last answer — by identifier.
    public struct Exports: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(
            commandName: "exports", abstract: "List the usage pushed to a billing platform (scheduled or by hand), from the ledger.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "The ledger: sqlite:PATH or postgres://USER@HOST:PORT/DATABASE.") var store = "sqlite:./tally-data/ledger.db"
        @Option(help: "Only this tenant.") var tenant: String?
        public init() {}

        public func validate() throws {
            do { _ = try StoreAddress(parsing: store) } catch { throw ValidationError("--store: \(error)") }
        }

        public func run() async throws {
            if case .sqlite(let path) = try StoreAddress(parsing: store), !FileManager.default.fileExists(atPath: path) {
                throw RuntimeFailure("no ledger at \(path)")
            }
            let writer = try openLedger(store, groupBy: [])
            let only = tenant
            let records = try await writer.perform { store throws(LedgerError) in try store.exportRecords(tenant: only) }
            await writer.shutdown()
            print(Self.table(records), terminator: "")
        }

        /// One line per record, tab-separated, with a header.
        static func table(_ records: [ExportRecord]) -> String {
            var out =
                ["identifier", "tenant", "metric", "hour", "value", "status", "attempts", "attempted_at", "sent_at", "answer"].joined(separator: "\t")
                + "\n"
            for record in records {
                let answer = (record.lastError ?? "").replacingOccurrences(of: "\n", with: " ").replacingOccurrences(of: "\t", with: " ")
                out +=
                    [
                        record.identifier, record.tenant, record.metric, "\(EventTime(startOfHour: record.hour))", record.value.description,
                        record.status.rawValue, String(record.attempts), record.attemptedAt.map { "\($0)" } ?? "",
                        record.sentAt.map { "\($0)" } ?? "", answer,
                    ].joined(separator: "\t") + "\n"
            }
            return out
        }
    }
}

/// `tallyctl invoice`: a tenant's invoice for a period, from the collector's API.
public struct InvoiceCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "invoice", abstract: "Show a tenant's invoice for a period (draft while open, final once closed).")
    @OptionGroup var global: GlobalOptions
    @OptionGroup var http: CollectorHTTPOptions
    @Option(help: "The tenant.") var tenant: String
    @Option(help: "The period, YYYY-MM (default: charges of the current period).") var period: String?
    @Option(help: "json, document (the invoice's JSON alone: a final invoice's SHA-256 is of exactly these bytes), csv or html.")
    var format = "json"
    public init() {}

    public func validate() throws {
        try http.validate()
        guard ["json", "document", "csv", "html"].contains(format) else {
            throw ValidationError("--format must be json, document, csv or html")
        }
        if let period, BillingPeriod(period) == nil { throw ValidationError("--period '\(period)' is not YYYY-MM") }
    }

    public func run() async throws {
        let tenantPath = MeterEventExporter.formEncode(tenant)
        let path = period.map { "/v1/tenants/\(tenantPath)/invoices/\($0)" } ?? "/v1/tenants/\(tenantPath)/charges"
        print(try await http.get(path + "?format=\(format)"), terminator: format == "json" ? "\n" : "")
    }
}

/// `tallyctl audit`: recomputes aggregates (and, with `--pricing`, final invoices) from the raw
/// ledger and prints any drift. Exit 0 when everything agrees, 1 when anything drifted.
public struct AuditCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "audit", abstract: "Recompute aggregates and invoices from the raw ledger and show any drift (exit 1 on drift).")
    @OptionGroup var global: GlobalOptions
    @Option(help: "The ledger: sqlite:PATH or postgres://USER@HOST:PORT/DATABASE.") var store = "sqlite:./tally-data/ledger.db"
    @Option(help: "Only this tenant.") var tenant: String?
    @Option(help: "Only this period, YYYY-MM (default: every period in the ledger).") var period: String?
    @Option(help: "The pricing YAML file: also re-price frozen final invoices and compare their SHA-256.") var pricing: String?
    public init() {}

    public func validate() throws {
        do { _ = try StoreAddress(parsing: store) } catch { throw ValidationError("--store: \(error)") }
        if let period, BillingPeriod(period) == nil { throw ValidationError("--period '\(period)' is not YYYY-MM") }
    }

    public func run() async throws {
        let pricingConfig = try pricing.map { try PricingConfigLoader.load(file: $0) }
        let configuration: LedgerConfiguration
        if let pricingConfig {
            configuration = AggregatePricing.ledgerConfiguration(for: pricingConfig)
        } else {
            configuration = try await storedDimensions(store)
        }
        let writer = try openLedger(store, configuration: configuration)
        let onlyTenant = tenant
        let onlyPeriod = period.flatMap { BillingPeriod($0) }
        let filter = ReconciliationFilter(period: onlyPeriod, tenant: onlyTenant)
        let (pairs, unreadable) = try await writer.perform { store throws(LedgerError) in
            (
                Set(try store.reconciliation(filter).filter { !$0.tenant.isEmpty }.map { "\($0.period)\u{0}\($0.tenant)" }).sorted(),
                try store.unreadableReconciliation(filter)
            )
        }
        // A stored row whose period cannot be read (written before event times were bounded)
        // is reported and skipped: it has no period to recompute, and it must not stop the audit.
        for row in unreadable {
            print(
                "SKIPPED reconciliation row with unreadable period '\(row.storedPeriod)' (tenant '\(row.tenant)', agent '\(row.agent)', \(row.counts.received) events received): no period to audit"
            )
        }
        var drifted = 0
        var cells = 0
        var tenantsByPeriod: [BillingPeriod: [String]] = [:]
        for pair in pairs {
            let parts = pair.split(separator: "\u{0}", maxSplits: 1).map(String.init)
            guard parts.count == 2, let period = BillingPeriod(parts[0]) else { continue }
            tenantsByPeriod[period, default: []].append(parts[1])
        }
        for (period, tenants) in tenantsByPeriod.sorted(by: { $0.key < $1.key }) {
            // One pass over the period's raw events for every tenant (or one tenant's).
            let drift = try await writer.perform { store throws(LedgerError) in
                try store.recomputeAggregates(tenant: onlyTenant, period: period)
            }
            cells += drift.cellsCompared
            for difference in drift.differences {
                drifted += 1
                print(
                    "DRIFT \(difference.grain) \(difference.key): stored \(Self.text(difference.stored)), recomputed from raw events \(Self.text(difference.recomputed))"
                )
            }
            guard let pricingConfig else { continue }
            let pricing = AggregatePricing(config: pricingConfig)
            for tenant in tenants {
                drifted += try await auditInvoice(writer: writer, pricing: pricing, tenant: tenant, period: period)
            }
        }
        print("audited \(pairs.count) tenant-periods, \(cells) aggregate cells: \(drifted) drifted")
        await writer.shutdown()
        if drifted > 0 { throw ExitCode(1) }
    }

    /// Checks a frozen final invoice: its stored JSON must hash to its stored SHA-256, and
    /// re-pricing it from the aggregates must give the same invoice. A re-priced hash that
    /// differs while the documents are equal is a final invoice frozen in an older JSON spelling
    /// (Foundation's encoder, before Tally's canonical writer): noted, not drift.
    private func auditInvoice(writer: Ledger, pricing: AggregatePricing, tenant: String, period: BillingPeriod) async throws -> Int {
        let service = Invoicing(ledger: writer, pricing: pricing, lateWindow: .standard)
        let outcome = try await service.onLedger {
            store throws(BillingError) -> (frozen: FinalInvoiceRecord, stored: EncodedInvoice, repriced: EncodedInvoice)? in
            let invoices = store
            let frozen: FinalInvoiceRecord?
            do { frozen = try invoices.finalInvoice(tenant: tenant, period: period) } catch { throw .reading(error) }
            guard let frozen else { return nil }
            let repriced = try EncodedInvoice(
                InvoiceDocument.priced(try pricing.invoice(store: invoices, tenant: tenant, period: period), store: invoices))
            return (frozen, try EncodedInvoice(stored: frozen.json), repriced)
        }
        guard let outcome else { return 0 }
        var drifted = 0
        if outcome.stored.sha256 != outcome.frozen.sha256 {
            print(
                "DRIFT invoice \(tenant) \(period): the stored JSON hashes to \(outcome.stored.sha256), not its stored sha256 \(outcome.frozen.sha256)"
            )
            drifted += 1
        }
        if outcome.repriced.sha256 != outcome.frozen.sha256 {
            if outcome.repriced.document == outcome.stored.document {
                print(
                    "NOTE invoice \(tenant) \(period): frozen in an older JSON spelling (sha256 \(outcome.frozen.sha256)); re-priced, it is the same invoice"
                )
            } else {
                print("DRIFT invoice \(tenant) \(period): frozen sha256 \(outcome.frozen.sha256), re-priced \(outcome.repriced.sha256)")
                drifted += 1
            }
        }
        return min(drifted, 1)
    }

    static func text(_ aggregate: UsageAggregate?) -> String {
        aggregate.map { "sum=\($0.sum) count=\($0.count) max=\($0.max)" } ?? "(none)"
    }

}

/// The group-by dimensions the stored aggregates have, so the recount builds the same cells.
/// Without a pricing file: the dimensions each metric has stored cells of, anywhere in the
/// ledger (a collector aggregates each metric by its own properties).
func storedDimensions(_ store: String) async throws -> LedgerConfiguration {
    if case .sqlite(let path) = try StoreAddress(parsing: store), !FileManager.default.fileExists(atPath: path) {
        throw RuntimeFailure("no ledger at \(path)")
    }
    let writer = try openLedger(store, groupBy: [])
    let byMetric = try await writer.perform { store throws(LedgerError) -> [String: Set<String>] in
        var found: [String: Set<String>] = [:]
        var seen: Set<String> = []
        for row in try store.reconciliation(ReconciliationFilter()) where !row.tenant.isEmpty {
            guard seen.insert("\(row.period)\u{0}\(row.tenant)").inserted else { continue }
            for key in try store.storedAggregates(tenant: row.tenant, period: row.period).keys {
                found[key.metric, default: []].formUnion(key.dimension.isEmpty ? [] : [key.dimension])
            }
        }
        return found
    }
    await writer.shutdown()
    var configuration = LedgerConfiguration(groupBy: Set(byMetric.values.joined()).sorted())
    configuration.metricGroupBy = byMetric.mapValues { $0.sorted() }
    return configuration
}

/// Opens a ledger (any backend) behind a writer thread, for the offline commands.
func openLedger(_ store: String, groupBy: [String]) throws -> Ledger {
    try openLedger(store, configuration: LedgerConfiguration(groupBy: groupBy))
}

/// Opens a ledger (any backend) with `configuration` behind a writer thread.
func openLedger(_ store: String, configuration: LedgerConfiguration) throws -> Ledger {
    let address: StoreAddress
    do { address = try StoreAddress(parsing: store) } catch { throw ValidationError("--store: \(error)") }
    do {
        return Ledger(store: try LedgerStores.open(address, configuration: configuration))
    } catch {
        throw RuntimeFailure("cannot open the ledger \(address): \(error)")
    }
}
