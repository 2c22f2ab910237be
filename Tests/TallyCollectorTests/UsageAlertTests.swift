import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import Prometheus
import Synchronization
import Testing
@testable import TallyCLI
import TallyCore
import TallyLedger
import TallyPricing
import TallyTestSupport
@testable import TallyCollector

/// A webhook receiver that does what a careful one does: it checks the `Tally-Signature` (HMAC
/// over the timestamp and the body, under the shared secret) and refuses a timestamp more than
/// five minutes from its clock (a replay), and it counts each alert id it accepted. It can be
/// told to fail (500) or to answer too late (the sender's timeout), a number of times.
final class WebhookReceiver: Sendable {
    enum Fault: Sendable {
        case fail
        case hang
    }

    struct State {
        /// alert id -> how many times it was accepted with a 2xx.
        var accepted: [String: Int] = [:]
        /// The bodies accepted, by alert id (the last one).
        var bodies: [String: String] = [:]
        var faults: [Fault] = []
        var requests = 0
        var badSignatures = 0
        var staleTimestamps = 0
        /// The id header and the body's id agreed on every request.
        var idsAgree = true
    }

    let state = Mutex(State())
    /// Where a `.hang` fault's request waits: until the test releases it.
    let hangs = HeldAnswers()
    let secret: [UInt8]
    let now: @Sendable () -> Int64
    let arrivals: AsyncStream<Void>
    private let arrived: AsyncStream<Void>.Continuation

    init(secret: String, now: @escaping @Sendable () -> Int64 = { EventTime.now().seconds }) {
        self.secret = Array(secret.utf8)
        self.now = now
        (arrivals, arrived) = AsyncStream.makeStream(of: Void.self)
    }

    var accepted: [String: Int] { state.withLock { $0.accepted } }

    /// Waits until `count` distinct alerts were accepted (30 s at most); the accepted ids then.
    func waitForAccepted(_ count: Int) async -> [String: Int] {
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                if self.accepted.count >= count { return }
                for await _ in self.arrivals where self.accepted.count >= count { return }
            }
            // A bound for a failing run only: the wait ends when the count arrives.
            group.addTask { try? await Task.sleep(for: .seconds(120)) }
            await group.next()
            group.cancelAll()
        }
        return accepted
    }

    func application() -> some ApplicationProtocol {
        let router = Router()
        router.post("hooks/tally") { request, _ -> Response in
            let body = try await String(buffer: request.body.collect(upTo: 1 << 20))
            let signature = request.headers[.init("Tally-Signature")!] ?? ""
            let id = request.headers[.init("Tally-Alert-Id")!] ?? ""
            var timestamp: Int64?
            var mac: String?
            for part in signature.split(separator: ",") {
                if part.hasPrefix("t=") { timestamp = Int64(part.dropFirst(2)) }
                if part.hasPrefix("v1=") { mac = String(part.dropFirst(3)) }
            }
            let bodyID = ((try? JSONSerialization.jsonObject(with: Data(body.utf8))) as? [String: Any])?["id"] as? String
            enum Reply {
                case status(HTTPResponse.Status)
                case hang
            }
            let reply = self.state.withLock { state -> Reply in
                state.requests += 1
                guard let timestamp, let mac,
                    mac == Hex.encode(SHA256Digest.hmac(key: self.secret, message: Array("\(timestamp).\(body)".utf8)))
                else {
                    state.badSignatures += 1
                    return .status(.unauthorized)
                }
                guard abs(self.now() - timestamp) <= 300 else {
                    state.staleTimestamps += 1
                    return .status(.badRequest)
                }
                if bodyID != id { state.idsAgree = false }
                if !state.faults.isEmpty {
                    switch state.faults.removeFirst() {
                    case .fail: return .status(.internalServerError)
                    case .hang: return .hang
                    }
                }
                state.accepted[id, default: 0] += 1
                state.bodies[id] = body
                return .status(.noContent)
            }
            self.arrived.yield()
            switch reply {
            case .status(let status): return Response(status: status)
            case .hang:
                await self.hangs.hold()
                return Response(status: .ok)
            }
        }
        return Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)))
    }
}

@Suite struct UsageAlertTests {
    static let secret = "whsec_0123456789abcdef"

    static let pricingYAML = """
        metrics:
          - name: api_calls
            aggregation: sum
            group_by: [endpoint]
        plans:
          - id: starter
            currency: USD
            charges:
              - metric: api_calls
                model: per_unit
                free: 100
                unit_price: "0.01"
          - id: euro
            currency: EUR
            charges:
              - metric: api_calls
                model: per_unit
                unit_price: "0.01"
        default_plan: starter
        assignments:
          - tenant: globex
            plan: euro
            from: 2026-01-01T00:00:00Z
        alerts:
          - name: calls-50
            metric: api_calls
            quantity: 50
          - name: free-80
            metric: api_calls
            percent_of_free: 80       # 80 of starter's 100 free calls; euro gives none
          - name: spend-1usd
            amount: "1.00"            # the invoice total, USD tenants only
            currency: USD
          - name: globex-5
            tenant: globex
            metric: api_calls
            quantity: 5
          - name: euro-spend
            plan: euro
            metric: api_calls
            amount: "0.40"
            currency: EUR
        """

    func settings(port: Int) -> AlertsConfig {
        var settings = AlertsConfig(webhookURL: "http://127.0.0.1:\(port)/hooks/tally", secret: .environment("UNUSED"))
        settings.initialBackoff = .seconds(1)
        settings.maxBackoff = .seconds(8)
        // Well above a loaded machine's answer: 2 s, then 6 s were not, once each (a clean-clone
        // CI run and a local full run timed out a plain answer, counted a failure the test had
        // not asked for, and delivered that alert twice). A hang lasts until the test ends.
        settings.requestTimeout = .seconds(20)
        return settings
    }

    func alerter(_ service: Invoicing, port: Int) -> UsageAlerter {
        UsageAlerter(service: service, settings: settings(port: port), secret: Array(Self.secret.utf8))
    }

    func id(_ tenant: String, _ alert: String, _ period: String) throws -> String {
        AlertRecord.identifier(tenant: tenant, alert: alert, period: try #require(BillingPeriod(period)))
    }

    /// Delivers until nothing is due, moving the clock past each backoff (at most `rounds`).
    func deliverAll(_ alerter: UsageAlerter, _ fixture: BillingFixture, rounds: Int = 12) async throws -> UsageAlerter.Delivery {
        var total = UsageAlerter.Delivery()
        for _ in 0..<rounds {
            let round = try await alerter.deliverDue(now: fixture.now)
            total.delivered += round.delivered
            total.failed += round.failed
            let pending = try await fixture.writer.perform { store throws(LedgerError) in
                try store.alertRecords(tenant: nil, period: nil).filter { $0.status == .pending }
            }
            guard let next = pending.map(\.nextAttemptAt).min() else { break }
            if next > fixture.now { fixture.clock.set(next) }
        }
        return total
    }

    /// Thresholds of every kind cross as usage grows; each alerts once per period through a
    /// receiver that fails, times out and is down, through a restart and two collectors at once,
    /// and a late event that takes last month over a threshold alerts for last month.
    @Test func eachThresholdAlertsOncePerPeriodThroughFailuresRestartsAndLateEvents() async throws {
        let fixture = try BillingFixture(now: "2026-03-20T12:00:00Z", pricingYAML: Self.pricingYAML)
        let clock = fixture.clock
        let receiver = WebhookReceiver(secret: Self.secret, now: { clock.now.seconds })
        let logger = Logger(label: "test")
        try await receiver.application().test(.live) { client in
            defer { receiver.hangs.releaseAll() }  // before the server waits for its handlers
            let port = try #require(client.port)
            let registry = PrometheusCollectorRegistry()
            let service = UsageAlerts(
                alerter: alerter(fixture.service, port: port), logger: logger, metrics: PrometheusMetricsFactory(registry: registry))

            // Below every threshold: nothing is claimed or sent.
            try await fixture.commit([
                try BillingFixture.event("acme", 40, at: "2026-03-10T10:00:00Z", id: "a1"),
                try BillingFixture.event("globex", 3, at: "2026-03-10T10:00:00Z", id: "g1"),
            ])
            let quiet = try await service.runOnce()
            #expect(quiet.claimed.isEmpty && quiet.delivery == UsageAlerter.Delivery())
            #expect(receiver.state.withLock { $0.requests } == 0)

            // acme reaches 85 calls (50 and 80% of its 100 free), globex 7 (its own 5; 80% of
            // nothing is not compared, and 0.07 EUR is below its plan's 0.40).
            try await fixture.commit([
                try BillingFixture.event("acme", 45, at: "2026-03-11T10:00:00Z", id: "a2"),
                try BillingFixture.event("globex", 4, at: "2026-03-11T10:00:00Z", id: "g2"),
            ])
            receiver.state.withLock { $0.faults = [.fail, .hang, .fail] }
            let first = try await service.runOnce()
            #expect(
                Set(first.claimed.map(\.identifier)) == [
                    try id("acme", "calls-50", "2026-03"), try id("acme", "free-80", "2026-03"), try id("globex", "globex-5", "2026-03"),
                ])
            let free = try #require(first.claimed.first { $0.alert == "free-80" })
            #expect(free.observed == "85" && free.limit == "80" && free.threshold == "80" && free.kind == "percent_of_free")
            // The three attempts of this round meet a 500, a timeout and a 500.
            #expect(first.delivery.delivered == 0 && first.delivery.failed == 3)
            let failed = try await fixture.writer.perform { store throws(LedgerError) in try store.alertRecords(tenant: nil, period: nil) }
            #expect(failed.allSatisfy { $0.status == .pending && $0.attempts == 1 && $0.lastError != nil && $0.nextAttemptAt > fixture.now })
            // A check now (more usage, same thresholds) claims nothing new and sends nothing early.
            try await fixture.commit([try BillingFixture.event("acme", 1, at: "2026-03-12T10:00:00Z", id: "a3")])
            let early = try await service.runOnce()
            #expect(early.claimed.isEmpty && early.delivery == UsageAlerter.Delivery())
            // After the backoff: delivered, once each.
            let retried = try await deliverAll(service.alerter, fixture)
            #expect(retried.delivered == 3 && retried.failed == 0)
            #expect(receiver.accepted.values.allSatisfy { $0 == 1 } && receiver.accepted.count == 3)
            let freeID = try id("acme", "free-80", "2026-03")
            let text = try #require(receiver.state.withLock { $0.bodies[freeID] })
            let body = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
            #expect(body["tenant"] as? String == "acme" && body["period"] as? String == "2026-03" && body["alert"] as? String == "free-80")
            #expect(body["type"] as? String == "usage_alert.threshold_crossed" && body["observed"] as? String == "85")
            #expect(body["metric"] as? String == "api_calls" && body["attempt"] as? Int == 2)
            var exposition: [UInt8] = []
            registry.emit(into: &exposition)
            let metrics = String(decoding: exposition, as: UTF8.self)
            #expect(metrics.contains(#"tally_collector_alerts_total{outcome="crossed"} 3"#), "\(metrics)")
            #expect(metrics.contains("tally_collector_alert_attempts_failed_total 3"), "\(metrics)")

            // acme spends past 1.00 USD (200 calls: 100 billed at 0.01) while the receiver is down
            // (nothing listens at the alerter's port): pending, with the failure kept.
            try fixture.setNow("2026-03-20T13:00:00Z")
            try await fixture.commit([try BillingFixture.event("acme", 114, at: "2026-03-13T10:00:00Z", id: "a4")])
            let downPort = try freeLoopbackPort()
            let down = UsageAlerter(service: fixture.service, settings: settings(port: downPort), secret: Array(Self.secret.utf8))
            let spend = try await down.check(now: fixture.now)
            #expect(spend.map(\.alert) == ["spend-1usd"] && spend.first?.observed == "1.00 USD")
            #expect(try await down.deliverDue(now: fixture.now).failed == 1)
            let waiting = try #require(
                try await fixture.writer.perform { store throws(LedgerError) in try store.alertRecords(tenant: "acme", period: nil) }
                    .first { $0.alert == "spend-1usd" })
            #expect(waiting.status == .pending && waiting.lastError != nil && waiting.deliveredAt == nil)
            #expect(receiver.accepted.count == 3)

            // A restart: another collector process on the same ledger, the receiver reachable.
            // It claims nothing again, and delivers the waiting alert once.
            let restarted = try BillingFixture.reopen(fixture)
            let afterRestart = alerter(restarted.service, port: port)
            #expect(try await afterRestart.check(now: fixture.now).isEmpty)
            let recovered = try await deliverAll(afterRestart, fixture)
            #expect(recovered.delivered == 1)
            #expect(receiver.accepted[try id("acme", "spend-1usd", "2026-03")] == 1 && receiver.accepted.count == 4)

            // Two collectors at once after globex spends 0.47 EUR (47 calls): one claims, one delivers.
            try await fixture.commit([try BillingFixture.event("globex", 40, at: "2026-03-14T10:00:00Z", id: "g3")])
            let one = alerter(fixture.service, port: port)
            async let a = one.check(now: fixture.now)
            async let b = afterRestart.check(now: fixture.now)
            let (claimedA, claimedB) = try await (a, b)
            #expect((claimedA + claimedB).map(\.alert) == ["euro-spend"])
            async let c = one.deliverDue(now: fixture.now)
            async let d = afterRestart.deliverDue(now: fixture.now)
            let (deliveredC, deliveredD) = try await (c, d)
            #expect(deliveredC.delivered + deliveredD.delivered == 1)
            #expect(receiver.accepted[try id("globex", "euro-spend", "2026-03")] == 1)

            // April: March is still open (72 h of grace). A late March event takes globex past 50
            // calls: March's threshold alerts, in March; April has nothing yet.
            try fixture.setNow("2026-04-01T06:00:00Z")
            try await fixture.commit([try BillingFixture.event("globex", 3, at: "2026-03-31T23:00:00Z", id: "late")])
            let late = try await service.runOnce()
            #expect(late.claimed.map { "\($0.tenant) \($0.alert) \($0.period)" } == ["globex calls-50 2026-03"])
            #expect(late.delivery.delivered == 1)
            // New usage in April alerts for April, once more per threshold.
            try await fixture.commit([try BillingFixture.event("acme", 60, at: "2026-04-01T05:00:00Z", id: "april")])
            let april = try await service.runOnce()
            #expect(april.claimed.map { "\($0.tenant) \($0.alert) \($0.period)" } == ["acme calls-50 2026-04"])

            let state = receiver.state.withLock { $0 }
            #expect(state.badSignatures == 0 && state.staleTimestamps == 0 && state.idsAgree)
            #expect(state.accepted.values.allSatisfy { $0 == 1 } && state.accepted.count == 7)
            // `tallyctl alerts` lists them all, delivered, with their attempts.
            let records = try await fixture.writer.perform { store throws(LedgerError) in try store.alertRecords(tenant: nil, period: nil) }
            #expect(records.count == 7 && records.allSatisfy { $0.status == .delivered })
            let table = AlertsCommand.table(records).split(separator: "\n")
            #expect(table.count == 8 && table[0].hasPrefix("period\ttenant\talert\tmetric\tkind\tthreshold\tobserved"))
            #expect(table.contains { $0.hasPrefix("2026-03\tacme\tspend-1usd\t\tamount\t1.00 USD\t1.00 USD\t2026-03-20T13:00:00Z\tdelivered\t2\t") })
            await restarted.shutdown()
        }
        await fixture.shutdown()
    }

    @Test func aForgedOrReplayedRequestIsRefusedByTheReceiversCheck() throws {
        let body = UsageAlerter.body(
            AlertRecord(
                tenant: "a\"b", alert: "x", period: try #require(BillingPeriod("2026-03")), metric: nil, kind: "amount",
                threshold: "1.00 USD", observed: "1.20 USD", limit: "1.00 USD", crossedAt: try EventTime(parsing: "2026-03-02T00:00:00Z")),
            attempt: 3)
        let parsed = try #require(try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any])
        #expect(parsed["tenant"] as? String == "a\"b" && parsed["metric"] is NSNull && parsed["attempt"] as? Int == 3)
        let signature = UsageAlerter.signature(body: body, timestamp: 1_772_409_600, secret: Array("s3cret".utf8))
        // The value a receiver computes with openssl: HMAC-SHA256("s3cret", "1772409600." + body).
        #expect(signature.hasPrefix("t=1772409600,v1=") && signature.count == "t=1772409600,v1=".count + 64)
        #expect(signature != UsageAlerter.signature(body: body + " ", timestamp: 1_772_409_600, secret: Array("s3cret".utf8)))
        #expect(signature != UsageAlerter.signature(body: body, timestamp: 1_772_409_601, secret: Array("s3cret".utf8)))
        #expect(signature != UsageAlerter.signature(body: body, timestamp: 1_772_409_600, secret: Array("s3cret!".utf8)))
    }

    @Test func aShareOfTheAllowanceIsRoundedUpToTheLastDigit() {
        #expect(UsageAlerter.share(80, of: Quantity(100)) == Quantity(80))
        #expect(UsageAlerter.share(50, of: Quantity(nanos: 3)) == Quantity(nanos: 2))
        #expect(UsageAlerter.share(1000, of: Quantity(7)) == Quantity(70))
        #expect(UsageAlerter.share(33, of: Quantity(1)) == Quantity(nanos: 330_000_000))
    }

    @Test func backoffDoublesUpToItsMaximum() throws {
        let fixture = try BillingFixture(pricingYAML: Self.pricingYAML)
        let alerter = alerter(fixture.service, port: 1)
        #expect((1...6).map(alerter.backoff(afterAttempts:)) == [.seconds(1), .seconds(2), .seconds(4), .seconds(8), .seconds(8), .seconds(8)])
        Task { await fixture.shutdown() }
    }

    /// Real collectors with an `alerts:` config: one on SQLite, or two on one PostgreSQL ledger.
    /// They check on their schedule with the secret from its file; the receiver gets each
    /// crossing once, after failing twice, whichever collector sends it.
    @Test(arguments: ["sqlite", "postgres"])
    func theCollectorsAlertOnTheirSchedule(_ backend: String) async throws {
        let store: String
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tally-alerts-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        if backend == "postgres" {
            guard let server = try await PostgresTestServer.shared() else { return }
            store = try server.createDatabase("alerts")
        } else {
            store = "sqlite:\(directory.path)/ledger.db"
        }
        let pricingPath = directory.appendingPathComponent("pricing.yaml").path
        try Self.pricingYAML.write(toFile: pricingPath, atomically: true, encoding: .utf8)
        let secretPath = directory.appendingPathComponent("webhook.secret").path
        try "\(Self.secret)\n".write(toFile: secretPath, atomically: true, encoding: .utf8)
        let receiver = WebhookReceiver(secret: Self.secret)
        receiver.state.withLock { $0.faults = [.fail, .fail] }
        try await receiver.application().test(.live) { client in
            let port = try #require(client.port)
            var config = try CollectorConfig.load(
                yaml: """
                    store: \(store)
                    listen: 127.0.0.1:0
                    http: 127.0.0.1:0
                    pricing: \(pricingPath)
                    alerts:
                      webhook_url: http://127.0.0.1:\(port)/hooks/tally
                      secret_file: \(secretPath)
                      every: 200ms
                      request_timeout: 120s
                      initial_backoff: 50ms
                      max_backoff: 200ms
                    """)
            // Delivery is at least once: an attempt whose 2xx arrives after the request's
            // timeout, or whose lease runs out, is sent again (same id). In one loaded CI run
            // (this test took 82 s) the receiver saw one crossing twice with the 10 s default.
            // With 120 s (a lease of 150 s, longer than the whole test) a second copy can only
            // come from two collectors holding one lease, which is what this test is about.
            config.adminKey = "admin-0123456789abcdef"
            var collectors = [try await startCollector(config)]
            if backend == "postgres" { collectors.append(try await startCollector(config)) }
            let ledger = collectors[0].ledger
            let now = EventTime.now()
            func event(_ tenant: String, _ quantity: Int64, id: String) -> IncomingEvent {
                .valid(UsageEvent(tenant: tenant, metric: "api_calls", quantity: Quantity(quantity), timestamp: now, id: id))
            }
            _ = try await ledger.commit(
                IncomingBatch(agent: "edge-1", sequence: 1, receivedAt: now, events: [event("acme", 60, id: "a"), event("globex", 6, id: "b")]))
            let period = BillingPeriod(containing: now).description
            // acme: 60 calls (50, not 80% of its 100 free); globex: 6 (its own 5).
            let expected = [try id("acme", "calls-50", period), try id("globex", "globex-5", period)]
            let accepted = await receiver.waitForAccepted(2)
            #expect(Set(accepted.keys) == Set(expected) && accepted.values.allSatisfy { $0 == 1 })
            // The collector records the 2xx just after the receiver answers it. A delivered record
            // is never leased again, so what the receiver holds once the collectors have stopped
            // is final.
            var records: [AlertRecord] = []
            let settled = try await eventuallyTrue {
                records = try await ledger.perform { store throws(LedgerError) in try store.alertRecords(tenant: nil, period: nil) }
                return records.count == expected.count && records.allSatisfy { $0.status == .delivered }
            }
            #expect(settled, "\(records)")
            for collector in collectors {
                collector.running.cancel()
                _ = try? await collector.running.value
            }
            let state = receiver.state.withLock { $0 }
            #expect(state.accepted == Dictionary(uniqueKeysWithValues: expected.map { ($0, 1) }))
            #expect(state.badSignatures == 0 && state.staleTimestamps == 0 && state.faults.isEmpty)
            #expect(Set(records.map(\.identifier)) == Set(expected) && records.allSatisfy { $0.status == .delivered })
        }
        if backend == "postgres", let server = try await PostgresTestServer.shared(), let name = PostgresTestServer.databaseName(in: store) {
            server.dropDatabase(name)
        }
    }
}
