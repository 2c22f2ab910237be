import Foundation
import NIOCore
public import Logging
public import Metrics
public import ServiceLifecycle
import TallyClient
public import TallyConfig
public import TallyCore
public import TallyLedger
import TallyPricing
public import TallyTLS

/// The collector's `alerts:` section: where usage alerts go (a webhook), the secret they are
/// signed with, and how often thresholds are checked. The thresholds themselves are in the
/// pricing file (`alerts:` there, ``TallyPricing/UsageAlertRule``).
public struct AlertsConfig: Sendable, Hashable {
    /// e.g. `https://hooks.example.com/tally`; `http://` only for loopback unless
    /// `allow_plaintext_remote`.
    public var webhookURL: String
    /// Where the signing secret comes from: read once at start, never logged.
    public var secret: ExportsConfig.KeySource
    /// The time between two checks of every threshold (the first runs at start).
    public var every: Duration = .seconds(60)
    /// How long one webhook request may take before it counts as failed.
    public var requestTimeout: Duration = .seconds(10)
    /// The wait after the first failed attempt; each next one twice as long, up to `maxBackoff`.
    public var initialBackoff: Duration = .seconds(1)
    public var maxBackoff: Duration = .seconds(600)

    public init(webhookURL: String, secret: ExportsConfig.KeySource) {
        self.webhookURL = webhookURL
        self.secret = secret
    }

    /// The secret, read now from its source (`environment`: this process's when nil).
    public func resolveSecret(environment: [String: String]? = nil) throws(ConfigError) -> [UInt8] {
        let environment = environment ?? ProcessInfo.processInfo.environment
        switch secret {
        case .environment(let name):
            guard let value = environment[name], !value.isEmpty else {
                throw ConfigError(
                    file: "<environment>", issues: [ConfigIssue(place: "alerts.secret_env", problem: "the variable \(name) is not set")])
            }
            return Array(value.utf8)
        case .file(let path):
            let text = try ConfigDocument.text(ofFile: path).trimmingCharacters(in: .whitespacesAndNewlines)
            guard !text.isEmpty else {
                throw ConfigError(file: path, issues: [ConfigIssue(place: "alerts.secret_file", problem: "the file is empty")])
            }
            return Array(text.utf8)
        }
    }
}

/// Finds usage alert thresholds crossed and delivers each crossing as a signed webhook.
///
/// **Once per threshold per period.** ``check(now:)`` compares every tenant's period-to-date
/// figures of the current and the previous billing period (late events of the previous one
/// count: a late event that takes a tenant over a threshold after the fact alerts too) with
/// every rule of the pricing file, and claims each crossing as an ``TallyLedger/AlertRecord``
/// keyed by (tenant, rule, period) before anything is sent. A threshold crossed stays crossed,
/// so a later check finds the record and claims nothing: no restart, second collector or usage
/// going down and up again alerts twice.
///
/// **Until the receiver answers 2xx.** ``deliverDue(now:)`` sends every pending record whose
/// time has come. Each attempt is leased in the ledger first (``TallyLedger/LedgerStore/leaseAlert(identifier:now:until:)``),
/// so of several collectors one sends it; any answer but 2xx, a timeout or no connection is
/// retried with exponential backoff (jittered), without limit: the record stays pending and is
/// listed by `tallyctl alerts` with the last answer. A collector that dies in the middle of an
/// attempt leaves a lease that runs out, and the record is sent again — the same `id`, so a
/// receiver that saw it already can tell (at-least-once delivery with a stable id, as webhook
/// senders do).
///
/// **The request** (protocol/WEBHOOKS.md): `POST` to the configured URL, a JSON body, and
/// `Tally-Signature: t=UNIX_SECONDS,v1=HEX` where HEX is HMAC-SHA256 of `t + "." + body`
/// under the secret, so the receiver checks the sender and refuses an old timestamp (a replay).
public struct UsageAlerter: Sendable {
    public let service: Invoicing
    public let settings: AlertsConfig
    let secret: [UInt8]
    let tls: ClientTLS?
    let allowPlaintextRemote: Bool

    public init(service: Invoicing, settings: AlertsConfig, secret: [UInt8], tls: ClientTLS? = nil, allowPlaintextRemote: Bool = false) {
        self.service = service
        self.settings = settings
        self.secret = secret
        self.tls = tls
        self.allowPlaintextRemote = allowPlaintextRemote
    }

    /// What one delivery round did.
    public struct Delivery: Sendable, Hashable {
        public var delivered = 0
        public var failed = 0
        public init() {}
    }

    /// Compares the current and the previous period with every rule and claims the new
    /// crossings; the records this call claimed.
    public func check(now: EventTime) async throws(BillingError) -> [AlertRecord] {
        guard let pricing = service.pricing else { throw .noPricing }
        let rules = pricing.config.alerts
        guard !rules.isEmpty else { return [] }
        let current = BillingPeriod(containing: now)
        var claimed: [AlertRecord] = []
        for period in [current.previous, current] {
            let crossings = try await service.onLedger(readOnly: true) { store throws(BillingError) -> [AlertRecord] in
                try Self.crossings(pricing: pricing, rules: rules, period: period, now: now, store: store)
            }
            guard !crossings.isEmpty else { continue }
            claimed += try await service.onLedger { store throws(BillingError) -> [AlertRecord] in
                var mine: [AlertRecord] = []
                for record in crossings {
                    do throws(LedgerError) { if try store.claimAlert(record) { mine.append(record) } } catch { throw .ledger(error) }
                }
                return mine
            }
        }
        return claimed
    }

    /// The crossings of `period` not yet recorded, as records to claim.
    static func crossings(
        pricing: AggregatePricing, rules: [UsageAlertRule], period: BillingPeriod, now: EventTime, store: any LedgerStore
    ) throws(BillingError) -> [AlertRecord] {
        let recorded: Set<String>
        let tenants: [TenantPeriodUsage]
        do {
            recorded = Set(try store.alertRecords(tenant: nil, period: period).map(\.identifier))
            tenants = try pricing.tenants(pricing.periodUsageQuery(period: period), store: store)
        } catch {
            throw .ledger(error)
        }
        // The plan that decides `plan:` and `percent_of_free`: the one in force now, or at the
        // period's last instant for a period that has ended.
        let planTime = min(now, period.end.advanced(by: .microseconds(-1)))
        var result: [AlertRecord] = []
        for tenant in tenants {
            var invoice: Invoice?
            for rule in rules {
                if let only = rule.tenant, only != tenant.tenant { continue }
                if recorded.contains(AlertRecord.identifier(tenant: tenant.tenant, alert: rule.name, period: period)) { continue }
                let plan = try? pricing.engine.plan(for: tenant.tenant, at: planTime)
                if let only = rule.plan, plan?.id != only { continue }
                var observed: String
                var limit: String
                switch rule.threshold {
                case .quantity(let threshold):
                    guard let metric = rule.metric.flatMap(pricing.config.metric(named:)) else { continue }
                    let quantity = try pricing.quantity(of: metric, in: tenant, store: store)
                    guard quantity >= threshold else { continue }
                    observed = quantity.description
                    limit = threshold.description
                case .percentOfFree(let percent):
                    guard let name = rule.metric, let metric = pricing.config.metric(named: name),
                        let allowance = plan?.usageCharge(for: name)?.price(for: nil)?.freeAllowance, allowance.nanos > 0
                    else { continue }
                    let threshold = Self.share(percent, of: allowance)
                    let quantity = try pricing.quantity(of: metric, in: tenant, store: store)
                    guard quantity >= threshold else { continue }
                    observed = quantity.description
                    limit = threshold.description
                case .amount(let threshold):
                    if invoice == nil {
                        // A tenant the plans cannot price (no plan at all) has no charges to compare.
                        invoice = try? pricing.invoice(tenant, store: store)
                    }
                    guard let invoice, invoice.currency == threshold.currency else { continue }
                    var amount = Money.zero(invoice.currency)
                    if let metric = rule.metric {
                        for line in invoice.lines where line.metric == metric {
                            do { amount = try amount.adding(line.amount) } catch {
                                throw .pricing(.overflow(context: "alert \(rule.name)", detail: "\(error)"))
                            }
                        }
                    } else {
                        amount = invoice.total
                    }
                    guard amount >= threshold else { continue }
                    observed = amount.description
                    limit = threshold.description
                }
                result.append(
                    AlertRecord(
                        tenant: tenant.tenant, alert: rule.name, period: period, metric: rule.metric, kind: rule.kind,
                        threshold: rule.thresholdText, observed: observed, limit: limit, crossedAt: now))
            }
        }
        return result
    }

    /// `percent`% of `allowance`, rounded up to the quantity's last digit: a quantity reaches
    /// the share exactly when it reaches the rounded value.
    static func share(_ percent: Int, of allowance: Quantity) -> Quantity {
        let (product, overflow) = allowance.nanos.multipliedReportingOverflow(by: Int128(percent))
        // An allowance this large (beyond 10^26 units) cannot be reached by any quantity.
        if overflow { return Quantity(nanos: Int128.max) }
        let (quotient, remainder) = product.quotientAndRemainder(dividingBy: 100)
        return Quantity(nanos: remainder > 0 ? quotient + 1 : quotient)
    }

    /// Sends every pending record that is due by `now`.
    public func deliverDue(now: EventTime) async throws(BillingError) -> Delivery {
        var delivery = Delivery()
        let due = try await service.onLedger { store throws(BillingError) -> [AlertRecord] in
            do throws(LedgerError) { return try store.dueAlerts(now: now, limit: 500) } catch { throw .ledger(error) }
        }
        for record in due {
            if Task.isCancelled { break }
            if try await attempt(record.identifier) { delivery.delivered += 1 } else { delivery.failed += 1 }
        }
        return delivery
    }

    /// One attempt at one record: lease it, send it, record the answer. Whether it was delivered
    /// (false also when another collector holds the lease).
    func attempt(_ identifier: String) async throws(BillingError) -> Bool {
        let started = service.clock()
        // The lease outlives the request: no one else sends the record while this attempt may.
        let lease = started.advanced(by: settings.requestTimeout + .seconds(30))
        let leased = try await service.onLedger { store throws(BillingError) -> AlertRecord? in
            do throws(LedgerError) { return try store.leaseAlert(identifier: identifier, now: started, until: lease) } catch { throw .ledger(error) }
        }
        guard let record = leased else { return false }
        var delivered = false
        var answer: String?
        do {
            let target = try HTTPExchange.Target(url: settings.webhookURL)
            let sentAt = service.clock()
            let body = Self.body(record, attempt: record.attempts)
            let reply = try await HTTPExchange(url: target, tls: tls, allowPlaintextRemote: allowPlaintextRemote).request(
                method: "POST", path: target.path,
                headers: [
                    ("Content-Type", "application/json"),
                    ("Tally-Alert-Id", record.identifier),
                    ("Tally-Signature", Self.signature(body: body, timestamp: sentAt.seconds, secret: secret)),
                ],
                body: ByteBuffer(string: body), timeout: settings.requestTimeout)
            delivered = (200..<300).contains(reply.status)
            if !delivered { answer = "HTTP \(reply.status): \(reply.text.prefix(200))" }
        } catch {
            answer = "\(error)"
        }
        let finished = service.clock()
        let next = delivered ? finished : finished.advanced(by: Self.jittered(backoff(afterAttempts: record.attempts)))
        let (outcome, error) = (delivered, answer)
        try await service.onLedger { store throws(BillingError) in
            do throws(LedgerError) {
                try store.finishAlertAttempt(identifier: identifier, delivered: outcome, at: finished, error: error, nextAttemptAt: next)
            } catch {
                throw .ledger(error)
            }
        }
        return delivered
    }

    /// The wait after the `attempts`-th failed attempt: the initial backoff doubled for each
    /// earlier failure, at most the maximum.
    func backoff(afterAttempts attempts: Int) -> Duration {
        var wait = settings.initialBackoff
        for _ in 1..<max(1, attempts) where wait < settings.maxBackoff { wait = wait * 2 }
        return min(wait, settings.maxBackoff)
    }

    /// Between half of `wait` and all of it, so that many failed records do not retry in lockstep.
    static func jittered(_ wait: Duration) -> Duration { MeterEventExporter.jittered(wait) }

    /// `t=TIMESTAMP,v1=HEX`: HEX is HMAC-SHA256 of `"\(timestamp).\(body)"` under `secret`.
    public static func signature(body: String, timestamp: Int64, secret: [UInt8]) -> String {
        let mac = SHA256Digest.hmac(key: secret, message: Array("\(timestamp).\(body)".utf8))
        return "t=\(timestamp),v1=\(Hex.encode(mac))"
    }

    /// The webhook's JSON body, members in this order (protocol/WEBHOOKS.md).
    public static func body(_ record: AlertRecord, attempt: Int) -> String {
        var members: [(key: String, value: String)] = [
            ("id", JSONWriter.quoted(record.identifier)),
            ("type", JSONWriter.quoted("usage_alert.threshold_crossed")),
            ("tenant", JSONWriter.quoted(record.tenant)),
            ("alert", JSONWriter.quoted(record.alert)),
            ("period", JSONWriter.quoted(record.period.description)),
        ]
        members.append(("metric", record.metric.map(JSONWriter.quoted) ?? "null"))
        members += [
            ("kind", JSONWriter.quoted(record.kind)),
            ("threshold", JSONWriter.quoted(record.threshold)),
            ("limit", JSONWriter.quoted(record.limit)),
            ("observed", JSONWriter.quoted(record.observed)),
            ("crossed_at", JSONWriter.quoted(record.crossedAt.description)),
            ("attempt", String(attempt)),
        ]
        return JSONWriter.object(members)
    }
}

/// Checks the usage alert thresholds every ``AlertsConfig/every`` (at start first) and delivers
/// the pending webhooks in between, as soon as each is due.
///
/// Metrics: `tally_collector_alerts_total{outcome="crossed"}` (crossings this collector claimed),
/// `tally_collector_alerts_total{outcome="delivered"}`, `tally_collector_alert_attempts_failed_total`
/// (webhook attempts without a 2xx) and `tally_collector_alert_checks_failed_total` (checks that
/// stopped on an error, e.g. the ledger away; the next check tries again).
public struct UsageAlerts: Service {
    let alerter: UsageAlerter
    let logger: Logger
    let crossed: Counter
    let delivered: Counter
    let failedAttempts: Counter
    let failedChecks: Counter

    public init(alerter: UsageAlerter, logger: Logger, metrics: any MetricsFactory = MetricsSystem.factory) {
        self.alerter = alerter
        self.logger = logger
        crossed = Counter(label: "tally_collector_alerts_total", dimensions: [("outcome", "crossed")], factory: metrics)
        delivered = Counter(label: "tally_collector_alerts_total", dimensions: [("outcome", "delivered")], factory: metrics)
        failedAttempts = Counter(label: "tally_collector_alert_attempts_failed_total", factory: metrics)
        failedChecks = Counter(label: "tally_collector_alert_checks_failed_total", factory: metrics)
    }

    /// One check and one delivery round, now.
    public func runOnce() async throws(BillingError) -> (claimed: [AlertRecord], delivery: UsageAlerter.Delivery) {
        let claimed = try await alerter.check(now: alerter.service.clock())
        crossed.increment(by: claimed.count)
        for record in claimed {
            logger.info(
                "usage alert crossed",
                metadata: ["tenant": "\(record.tenant)", "alert": "\(record.alert)", "period": "\(record.period)", "observed": "\(record.observed)"])
        }
        return (claimed, try await deliver())
    }

    func deliver() async throws(BillingError) -> UsageAlerter.Delivery {
        let delivery = try await alerter.deliverDue(now: alerter.service.clock())
        delivered.increment(by: delivery.delivered)
        failedAttempts.increment(by: delivery.failed)
        if delivery.failed > 0 {
            logger.warning("usage alert webhooks failed; retrying with backoff", metadata: ["failed": "\(delivery.failed)"])
        }
        return delivery
    }

    public func run() async throws {
        let settings = alerter.settings
        // Retries are looked for this often between two checks.
        let tick = min(settings.every, max(min(settings.initialBackoff, .seconds(5)), .milliseconds(20)))
        var nextCheck = ContinuousClock.now
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            let checking = ContinuousClock.now >= nextCheck
            if checking { nextCheck = ContinuousClock.now.advanced(by: settings.every) }
            do {
                try await cancelWhenGracefulShutdown { () async throws in
                    if checking { _ = try await runOnce() } else { _ = try await deliver() }
                }
            } catch {
                if Task.isCancelled || Task.isShuttingDownGracefully { return }
                failedChecks.increment()
                logger.error("usage alerts: the check failed; trying again at the next one", metadata: ["error": "\(error)"])
            }
            do {
                try await cancelWhenGracefulShutdown { try await Task.sleep(for: tick) }
            } catch {
                return
            }
        }
    }
}
