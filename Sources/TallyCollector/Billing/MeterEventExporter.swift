import NIOCore
import TallyClient
public import TallyCore
import TallyLedger
public import TallyTLS
import TallyPricing

/// Pushes usage to a billing platform as Stripe meter events (`POST {base}/v1/billing/meter_events`,
/// form-encoded: `event_name`, `payload[stripe_customer_id]`, `payload[value]`, `timestamp`,
/// `identifier`): one record per tenant, metric and closed hour.
///
/// Exactly-once towards the platform: each record has a stable `identifier`
/// (`tally-{tenant}-{metric}-{hour}-{revision}`), is claimed in `usage_exports` before it is
/// sent (``TallyLedger/LedgerStore/claimExportRecord(_:)``: of several collectors planning the
/// same record, one claims it and the others take the stored one), and is resent with the same
/// identifier and value, also after a restart, until the platform answers 2xx, so the platform
/// dedupes a retry. A `400` whose error code is `resource_already_exists` (the platform has the
/// identifier already) counts as delivered. `429`, `408`, `409`, `5xx`, timeouts and connection
/// failures are retried with exponential backoff and jitter; any other `4xx` marks the record
/// failed, with the answer kept, and it is tried once at each later run.
///
/// What a record holds never double counts: the value of (tenant, metric, hour) is only ever
/// sent as the difference between the hour's total now and the sum of every record of that hour
/// already in the ledger (whatever their state). When late events raise an hour already
/// exported, the next run sends only the difference, under the next revision's identifier. Only
/// additive metrics (sum, count) are exported, only the mapped ones when ``Settings/meters`` is
/// not empty; metric filters apply as on the invoice.
public struct MeterEventExporter: Sendable {
    /// Where and how to send.
    public struct Settings: Sendable {
        /// e.g. `https://api.stripe.com`; `http://` only for loopback (a local mock or proxy)
        /// unless `allowPlaintextRemote`.
        public var baseURL: String
        public var apiKey: String?
        /// tenant -> the platform's customer id; a tenant not listed is sent under its own name.
        public var customers: [String: String]
        /// metric -> the platform's meter event name; when not empty, only these metrics are
        /// exported. Empty: every additive metric, under its own name.
        public var meters: [String: String]
        public var maxAttempts: Int
        /// The first retry waits this long; each next one twice as long.
        public var initialBackoff: Duration
        public var maxBackoff: Duration
        /// The CA (and client certificate) for `https://`; nil: the system's trust store.
        public var tls: ClientTLS?
        /// Plain `http://` to a host not on loopback.
        public var allowPlaintextRemote: Bool
        /// How long one request may take (connecting included) before it counts as a failed attempt.
        public var requestTimeout: Duration

        public init(
            baseURL: String, apiKey: String? = nil, customers: [String: String] = [:], maxAttempts: Int = 5,
            initialBackoff: Duration = .milliseconds(200), maxBackoff: Duration = .seconds(10), tls: ClientTLS? = nil,
            allowPlaintextRemote: Bool = false, requestTimeout: Duration = .seconds(30), meters: [String: String] = [:]
        ) {
            self.meters = meters
            self.requestTimeout = requestTimeout
            self.tls = tls
            self.allowPlaintextRemote = allowPlaintextRemote
            self.baseURL = baseURL
            self.apiKey = apiKey
            self.customers = customers
            self.maxAttempts = maxAttempts
            self.initialBackoff = initialBackoff
            self.maxBackoff = maxBackoff
        }
    }

    /// What one run did.
    public struct Report: Sendable, Hashable {
        /// Records sent and acknowledged in this run.
        public var sent = 0
        /// Records already acknowledged earlier (nothing sent).
        public var alreadySent = 0
        /// Records still not acknowledged after every attempt (retried next run).
        public var failed = 0
        /// HTTP requests made, retries included.
        public var requests = 0
        public init() {}
    }

    public let service: Invoicing
    public let settings: Settings

    public init(service: Invoicing, settings: Settings) {
        self.service = service
        self.settings = settings
    }

    /// The `Idempotency-Key` of one attempt: the identifier and the attempt's number (counted in
    /// the ledger, so it goes on across restarts). One key per attempt, because the platform's
    /// idempotency layer replays the first answer to a key for a day, a 500 included; a retry
    /// under a new key is deduplicated by the `identifier` instead. A network retry of the same
    /// attempt (a proxy's) keeps the key.
    static func idempotencyKey(_ record: ExportRecord) -> String { "\(record.identifier)-a\(record.attempts)" }

    /// The longest identifier the platform takes (Stripe: 100 characters).
    public static let maxIdentifierLength = 100

    /// The stable identifier of one record: readable, `tally-{tenant}-{metric}-{hour}-r{revision}`,
    /// unless that is longer than ``maxIdentifierLength``; then `tally-{sha256}-r{revision}`, the
    /// hash (32 hex digits) taken over the length-prefixed tenant, metric and hour, so that two
    /// records never share one and a resend always has the same.
    public static func identifier(tenant: String, metric: String, hour: Int64, revision: Int) -> String {
        let readable = "tally-\(tenant)-\(metric)-\(EventTime(startOfHour: hour))-r\(revision)"
        guard readable.utf8.count > maxIdentifierLength else { return readable }
        let key = [tenant, metric, String(hour)].map { "\($0.utf8.count):\($0)" }.joined()
        return "tally-\(SHA256Digest.hex(key).prefix(32))-r\(revision)"
    }

    /// Exports every closed hour of `period` for `tenants` (the ledger's tenants of the period when nil).
    public func export(period: BillingPeriod, tenants: [String]? = nil, now: EventTime) async throws(BillingError) -> Report {
        guard let pricing = service.pricing else { throw .noPricing }
        let list: [String]
        if let tenants { list = tenants } else { list = try await service.tenants(in: period) }
        let lastHour = min(now.hourSinceEpoch, period.end.hourSinceEpoch)
        let hours = period.start.hourSinceEpoch..<max(period.start.hourSinceEpoch, lastHour)
        var report = Report()
        for tenant in list {
            let records = try await plan(pricing: pricing, tenant: tenant, hours: hours)
            for record in records {
                if record.status == .sent {
                    report.alreadySent += 1
                    continue
                }
                try await send(record, report: &report)
            }
        }
        return report
    }

    /// The records of one tenant: stored unsent ones, and new ones for usage not yet recorded.
    /// New records are saved (pending) before anything is sent.
    private func plan(pricing: AggregatePricing, tenant: String, hours: Range<Int64>) async throws(BillingError) -> [ExportRecord] {
        try await service.onLedger { store throws(BillingError) -> [ExportRecord] in
            let invoices = store
            do {
                var existing: [String: [ExportRecord]] = [:]
                for record in try invoices.exportRecords(tenant: tenant) {
                    existing["\(record.metric)\u{0}\(record.hour)", default: []].append(record)
                }
                var result: [ExportRecord] = []
                for metric in pricing.config.metrics
                where metric.aggregation.isAdditive && !metric.aggregation.isLevel && (settings.meters.isEmpty || settings.meters[metric.name] != nil)
                {
                    let filtered = metric.filters.first?.property
                    for (hour, total) in try invoices.hourlyTotals(tenant: tenant, metric: metric.name, hours: hours) {
                        var value = try AggregatePricing.quantity(of: total, metric.aggregation)
                        if let filtered {
                            value = .zero
                            let cells = try invoices.billableAggregates(
                                tenant: tenant, metric: metric.name, hours: hour..<(hour + 1), dimension: filtered,
                                billing: .billedThrough(BillingPeriod.last))
                            for (group, aggregate) in cells where metric.matches(group.isEmpty ? [:] : [filtered: group]) {
                                value = try value.adding(AggregatePricing.quantity(of: aggregate, metric.aggregation))
                            }
                        }
                        let previous = existing["\(metric.name)\u{0}\(hour)"] ?? []
                        var recorded = Quantity.zero
                        for record in previous { recorded = try recorded.adding(record.value) }
                        result += previous
                        let delta = try value.subtracting(recorded)
                        if delta > .zero {
                            let record = ExportRecord(
                                identifier: Self.identifier(tenant: tenant, metric: metric.name, hour: hour, revision: previous.count + 1),
                                tenant: tenant, metric: metric.name, hour: hour, value: delta, status: .pending, attempts: 0)
                            if try invoices.claimExportRecord(record) {
                                result.append(record)
                            } else if let stored = try invoices.exportRecord(identifier: record.identifier) {
                                // Another collector claimed this revision first: its record is the one.
                                result.append(stored)
                            }
                        }
                    }
                }
                return result
            } catch let error as BillingError {
                throw error
            } catch {
                throw .reading(error)
            }
        }
    }

    /// Sends one record until it is acknowledged or the attempts run out, recording each try.
    private func send(_ start: ExportRecord, report: inout Report) async throws(BillingError) {
        var record = start
        var backoff = settings.initialBackoff
        for attempt in 1...max(1, settings.maxAttempts) {
            report.requests += 1
            record.attempts += 1
            record.attemptedAt = service.clock()
            var acknowledged = false
            var permanent = false
            do {
                let target = try HTTPExchange.Target(url: settings.baseURL + "/v1/billing/meter_events")
                let reply = try await HTTPExchange(url: target, tls: settings.tls, allowPlaintextRemote: settings.allowPlaintextRemote)
                    .request(
                        method: "POST", path: target.path,
                        headers: [
                            ("Content-Type", "application/x-www-form-urlencoded"),
                            ("Idempotency-Key", Self.idempotencyKey(record)),
                        ]
                            + (settings.apiKey.map { [("Authorization", "Bearer \($0)")] } ?? []),
                        body: ByteBuffer(string: formBody(record, now: service.clock())), timeout: settings.requestTimeout)
                switch Self.answer(status: reply.status, body: reply.text) {
                case .delivered:
                    acknowledged = true
                    record.lastError = nil
                case .alreadyDelivered:
                    acknowledged = true
                    record.lastError = "already delivered: HTTP \(reply.status): \(reply.text.prefix(200))"
                case .retry:
                    record.lastError = "HTTP \(reply.status): \(reply.text.prefix(200))"
                case .refused:
                    permanent = true
                    record.lastError = "HTTP \(reply.status): \(reply.text.prefix(200))"
                }
            } catch {
                record.lastError = "\(error)"
            }
            record.status = acknowledged ? .sent : (permanent ? .failed : .pending)
            if acknowledged { record.sentAt = service.clock() }
            let snapshot = record
            _ = try await service.onLedger { store throws(BillingError) in
                let invoices = store
                do { try invoices.saveExportRecord(snapshot) } catch { throw .reading(error) }
            }
            if acknowledged {
                report.sent += 1
                return
            }
            if permanent || attempt == settings.maxAttempts { break }
            try? await Task.sleep(for: Self.jittered(backoff))
            backoff = min(backoff * 2, settings.maxBackoff)
        }
        report.failed += 1
    }

    /// What the platform's answer to one meter event means.
    public enum Answer: Sendable, Hashable {
        /// 2xx: recorded.
        case delivered
        /// 400 `resource_already_exists`: the identifier was recorded before (a resend).
        case alreadyDelivered
        /// 408, 429, 5xx: try again after a while.
        case retry
        /// Any other status: the platform will not take this record; retrying cannot help.
        case refused
    }

    /// Classifies an answer by its status and, for a 400, the error code in its body.
    public static func answer(status: Int, body: String) -> Answer {
        switch status {
        case 200..<300: return .delivered
        case 400 where body.contains("resource_already_exists"): return .alreadyDelivered
        case 408, 409, 429, 500..<600: return .retry
        default: return .refused
        }
    }

    /// A wait between half of `backoff` and all of it (jitter, so that many records failing
    /// together do not retry in lockstep).
    static func jittered(_ backoff: Duration) -> Duration {
        let nanoseconds = max(2, backoff.components.seconds * 1_000_000_000 + backoff.components.attoseconds / 1_000_000_000)
        return .nanoseconds(Int64.random(in: (nanoseconds / 2)...nanoseconds))
    }

    /// How far back the platform takes an event's timestamp (Stripe: 35 days), less a margin.
    public static let oldestTimestamp: Duration = .seconds(34 * 86_400)

    /// The event's `timestamp`: the start of its hour, or `now` when that is older than the
    /// platform takes (a late event's revision of an old hour), so that it is billed in the
    /// platform's current period, as Tally bills late usage as an adjustment of the next invoice.
    /// The identifier, not the timestamp, is what the platform dedupes, so a resend with a later
    /// `now` changes nothing.
    public static func timestamp(hour: Int64, now: EventTime) -> Int64 {
        let start = hour * 3600
        return start < now.seconds - oldestTimestamp.components.seconds ? now.seconds : start
    }

    /// The Stripe meter-event form body.
    func formBody(_ record: ExportRecord, now: EventTime) -> String {
        let fields = [
            ("event_name", settings.meters[record.metric] ?? record.metric),
            ("payload[stripe_customer_id]", settings.customers[record.tenant] ?? record.tenant),
            ("payload[value]", record.value.description),
            ("timestamp", String(Self.timestamp(hour: record.hour, now: now))),
            ("identifier", record.identifier),
        ]
        return fields.map { "\(Self.formEncode($0.0))=\(Self.formEncode($0.1))" }.joined(separator: "&")
    }

    /// `application/x-www-form-urlencoded` escaping.
    public static func formEncode(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "~"):
                out.append(Character(UnicodeScalar(byte)))
            default:
                let hex = Array("0123456789ABCDEF")
                out += "%" + String(hex[Int(byte >> 4)]) + String(hex[Int(byte & 0x0f)])
            }
        }
        return out
    }
}

extension BillingPeriod {
    /// A period after every real one (December 9999), to select all billings.
    static var last: BillingPeriod { BillingPeriod(containing: EventTime(seconds: 253_402_300_000 - 86_400 * 20)) }
}
