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
import TallyTestSupport
@testable import TallyCollector

/// A stand-in billing platform that behaves like Stripe's meter events where it matters: it
/// records each identifier once, answers a repeated one `400 resource_already_exists`, checks
/// the API key, replays the first answer to a repeated `Idempotency-Key` (a 500 included, as
/// Stripe's idempotency layer does), and can be told to fail (500), throttle (429, before the
/// idempotency layer, as Stripe's rate limiter), go down, or record an event and then not
/// answer in time (the answer lost to a timeout).
final class StrictPlatform: Sendable {
    enum Fault: Sendable {
        case fail
        case tooManyRequests
        case recordThenHang
    }

    struct Event: Sendable, Hashable {
        var customer: String
        var meter: String
        var value: Int
        var timestamp: String
    }

    struct SavedAnswer: Sendable {
        var status: HTTPResponse.Status
        var body: String
    }

    struct State {
        /// identifier -> the event recorded under it (the first one).
        var recorded: [String: Event] = [:]
        var faults: [Fault] = []
        var down = false
        var requests = 0
        var duplicates = 0
        var unauthorized = 0
        /// Every request's key was the identifier plus an attempt suffix.
        var keysCarryIdentifier = true
        /// Idempotency-Key -> the first answer to it.
        var savedAnswers: [String: SavedAnswer] = [:]
        var replays = 0
    }

    let state = Mutex(State())
    /// Where a `.recordThenHang` answer waits: until the test releases it.
    let hangs = HeldAnswers()
    static let key = "sk_test_0123456789abcdef"
    /// One element each time an event is recorded (one reader: ``waitForTotals(_:)``).
    let recordings: AsyncStream<Void>
    private let recorded: AsyncStream<Void>.Continuation

    init() {
        (recordings, recorded) = AsyncStream.makeStream(of: Void.self)
    }

    /// Waits until the recorded totals are `expected` (30 s at most); the totals then.
    func waitForTotals(_ expected: [String: Int]) async -> [String: Int] {
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                if self.totals == expected { return }
                for await _ in self.recordings where self.totals == expected { return }
            }
            group.addTask { try? await Task.sleep(for: .seconds(30)) }
            await group.next()
            group.cancelAll()
        }
        return totals
    }

    /// Sum of recorded values per (customer, meter).
    var totals: [String: Int] {
        state.withLock { state in
            state.recorded.values.reduce(into: [:]) { $0["\($1.customer)/\($1.meter)", default: 0] += $1.value }
        }
    }

    func application() -> some ApplicationProtocol {
        let router = Router()
        router.post("v1/billing/meter_events") { request, _ -> Response in
            let body = try await String(buffer: request.body.collect(upTo: 1 << 20))
            var fields: [String: String] = [:]
            for pair in body.split(separator: "&") {
                let parts = pair.split(separator: "=", maxSplits: 1).map { String($0).removingPercentEncoding ?? String($0) }
                if parts.count == 2 { fields[parts[0]] = parts[1] }
            }
            let authorized = request.headers[.authorization] == "Bearer \(Self.key)"
            let idempotencyKey = request.headers[.init("Idempotency-Key")!]
            enum Reply {
                case status(HTTPResponse.Status, String)
                case hang
            }
            let reply = self.state.withLock { state -> Reply in
                state.requests += 1
                guard authorized else {
                    state.unauthorized += 1
                    return .status(.unauthorized, #"{"error":{"type":"invalid_request_error","code":"api_key_invalid"}}"#)
                }
                if state.down { return .status(.serviceUnavailable, "down") }
                let fault = state.faults.first
                if fault == .tooManyRequests {
                    state.faults.removeFirst()
                    return .status(.tooManyRequests, #"{"error":{"code":"rate_limit"}}"#)
                }
                if let key = idempotencyKey, let saved = state.savedAnswers[key] {
                    state.replays += 1
                    return .status(saved.status, saved.body)
                }
                if fault != nil { state.faults.removeFirst() }
                let answer: SavedAnswer
                var hang = false
                if fault == .fail {
                    answer = SavedAnswer(status: .internalServerError, body: #"{"error":{"type":"api_error"}}"#)
                } else if let identifier = fields["identifier"], let customer = fields["payload[stripe_customer_id]"],
                    let meter = fields["event_name"], let text = fields["payload[value]"], let value = Int(text),
                    let timestamp = fields["timestamp"]
                {
                    if idempotencyKey?.hasPrefix(identifier) != true { state.keysCarryIdentifier = false }
                    if state.recorded[identifier] != nil {
                        state.duplicates += 1
                        answer = SavedAnswer(
                            status: .badRequest,
                            body:
                                #"{"error":{"type":"invalid_request_error","code":"resource_already_exists","message":"An event with identifier \#(identifier) already exists."}}"#
                        )
                    } else {
                        state.recorded[identifier] = Event(customer: customer, meter: meter, value: value, timestamp: timestamp)
                        self.recorded.yield()
                        answer = SavedAnswer(status: .ok, body: #"{"object":"billing.meter_event","identifier":"\#(identifier)"}"#)
                        hang = fault == .recordThenHang
                    }
                } else {
                    answer = SavedAnswer(status: .badRequest, body: #"{"error":{"code":"parameter_missing"}}"#)
                }
                if let key = idempotencyKey { state.savedAnswers[key] = answer }
                return hang ? .hang : .status(answer.status, answer.body)
            }
            switch reply {
            case .status(let status, let text):
                return Response(status: status, body: .init(byteBuffer: ByteBuffer(string: text)))
            case .hang:
                // The event is recorded, but the answer comes after the exporter gave up.
                await self.hangs.hold()
                return Response(status: .ok)
            }
        }
        return Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)))
    }
}

@Suite struct ScheduledExportTests {
    func settings(port: Int, maxAttempts: Int) -> MeterEventExporter.Settings {
        var exports = ExportsConfig(baseURL: "http://127.0.0.1:\(port)")
        exports.meters = ["api_calls": "api_requests"]
        exports.customers = ["acme": "cus_acme"]
        exports.maxAttempts = maxAttempts
        exports.initialBackoff = .milliseconds(1)
        exports.maxBackoff = .milliseconds(8)
        // Well above a loaded machine's answer (2 s was not, once: a clean-clone CI run, with
        // PostgreSQL and the chaos suite beside it, timed out a plain answer and retried it once
        // more than the faults; 6 s was not, once, while the tests' cooperative pool was held by
        // tests computing for seconds). A hang lasts until the test ends (`HeldAnswers`).
        exports.requestTimeout = .seconds(20)
        return exports.settings(apiKey: StrictPlatform.key)
    }

    /// Failures, 429s, a lost answer, the platform down, a restart and two collectors at once:
    /// the platform ends with each hour's usage exactly once, and a run with nothing new sends
    /// nothing.
    @Test func scheduledExportsDeliverEachHourOnceThroughFaultsAndRestarts() async throws {
        let fixture = try BillingFixture(now: "2026-03-02T12:30:00Z")
        try await fixture.commit([
            try BillingFixture.event("acme", 4, at: "2026-02-27T10:05:00Z", id: "1"),
            try BillingFixture.event("acme", 6, at: "2026-02-27T10:55:00Z", id: "2"),
            try BillingFixture.event("acme", 5, at: "2026-03-01T07:00:00Z", id: "3"),
            try BillingFixture.event("globex", 3, at: "2026-03-02T09:00:00Z", id: "4"),
            try BillingFixture.event("acme", 1, at: "2026-03-02T12:10:00Z", id: "open-hour"),
            try BillingFixture.event("acme", metric: "exports", 1, at: "2026-03-01T07:00:00Z", id: "x1", [("status", "200")]),
        ])
        let platform = StrictPlatform()
        platform.state.withLock { $0.faults = [.fail, .tooManyRequests, .recordThenHang] }
        let logger = Logger(label: "test")
        try await platform.application().test(.live) { client in
            defer { platform.hangs.releaseAll() }  // before the server waits for its handlers
            let port = try #require(client.port)
            let registry = PrometheusCollectorRegistry()
            let first = ScheduledExports(
                exporter: MeterEventExporter(service: fixture.service, settings: settings(port: port, maxAttempts: 6)), every: .seconds(3_600),
                logger: logger, metrics: PrometheusMetricsFactory(registry: registry))

            // Run 1: the previous period's and this period's closed hours; the open hour and the
            // unmapped metric stay home. The first record meets a 500, a 429 and a lost answer,
            // and its fourth attempt is answered "already exists": delivered.
            let run1 = try await first.runOnce()
            #expect(run1.sent == 3 && run1.failed == 0)
            #expect(run1.requests == 6)
            #expect(platform.totals == ["cus_acme/api_requests": 15, "globex/api_requests": 3])
            var exposition: [UInt8] = []
            registry.emit(into: &exposition)
            let metrics = String(decoding: exposition, as: UTF8.self)
            #expect(metrics.contains(#"tally_collector_export_records_total{outcome="sent"} 3"#), "\(metrics)")
            #expect(metrics.contains("tally_collector_export_requests_total 6"), "\(metrics)")
            let afterRun1 = platform.state.withLock { $0 }
            #expect(afterRun1.duplicates == 1 && afterRun1.unauthorized == 0 && afterRun1.keysCarryIdentifier)
            // Each attempt had its own key: the saved 500 was never replayed to a retry.
            #expect(afterRun1.replays == 0 && afterRun1.savedAnswers.count == 5)
            #expect(afterRun1.recorded["tally-acme-api_calls-2026-02-27T10:00:00Z-r1"]?.timestamp == "1772186400")
            let records = try await fixture.writer.perform { store throws(LedgerError) in try store.exportRecords(tenant: nil) }
            #expect(records.count == 3 && records.allSatisfy { $0.status == .sent && $0.sentAt != nil })
            #expect(records.first?.attempts == 4 && records.first?.lastError?.contains("resource_already_exists") == true)
            // `tallyctl usage exports` lists them: what, when, the answer.
            let table = UsageCommand.Exports.table(records).split(separator: "\n")
            #expect(table.count == 4 && table.first?.hasPrefix("identifier\ttenant\tmetric\thour\tvalue\tstatus") == true)
            #expect(
                table[1].contains(
                    "\tacme\tapi_calls\t2026-02-27T10:00:00Z\t10\tsent\t4\t2026-03-02T12:30:00Z\t2026-03-02T12:30:00Z\talready delivered"))

            // Two hours later, with a late event raising an hour already exported, the platform
            // is down: nothing is delivered, and the two new records wait in the ledger.
            try fixture.setNow("2026-03-02T14:30:00Z")
            try await fixture.commit([try BillingFixture.event("acme", 2, at: "2026-03-01T07:30:00Z", id: "late")])
            platform.state.withLock { $0.down = true }
            let down = ScheduledExports(
                exporter: MeterEventExporter(service: fixture.service, settings: settings(port: port, maxAttempts: 2)), every: .seconds(3_600),
                logger: logger)
            let run2 = try await down.runOnce()
            #expect(run2.sent == 0 && run2.failed == 2 && run2.alreadySent == 3)
            #expect(platform.totals == ["cus_acme/api_requests": 15, "globex/api_requests": 3])
            let pending = try await fixture.writer.perform { store throws(LedgerError) in try store.exportRecords(tenant: "acme") }
                .filter { $0.status != .sent }
            #expect(
                pending.map(\.identifier).sorted() == [
                    "tally-acme-api_calls-2026-03-01T07:00:00Z-r2", "tally-acme-api_calls-2026-03-02T12:00:00Z-r1",
                ])
            #expect(pending.allSatisfy { $0.lastError?.contains("503") == true && $0.sentAt == nil })
            #expect(pending.allSatisfy { $0.attemptedAt == fixture.now && $0.attempts == 2 })

            // A restart: a new collector process on the same ledger, the platform back up and
            // losing one answer again. The waiting records go out under the same identifiers,
            // with the same values; nothing already delivered is sent again.
            platform.state.withLock {
                $0.down = false
                $0.faults = [.recordThenHang]
            }
            let restarted = try BillingFixture.reopen(fixture)
            let afterRestart = ScheduledExports(
                exporter: MeterEventExporter(service: restarted.service, settings: settings(port: port, maxAttempts: 3)),
                every: .seconds(3_600), logger: logger)
            let run3 = try await afterRestart.runOnce()
            #expect(run3.sent == 2 && run3.failed == 0 && run3.alreadySent == 3)
            #expect(platform.totals == ["cus_acme/api_requests": 18, "globex/api_requests": 3])
            #expect(platform.state.withLock { $0.recorded["tally-acme-api_calls-2026-03-01T07:00:00Z-r2"]?.value } == 2)

            // Two collectors run at once after a new event: one record, delivered once.
            try await fixture.commit([try BillingFixture.event("globex", 4, at: "2026-03-02T13:20:00Z", id: "5")])
            async let one = first.runOnce()
            async let two = afterRestart.runOnce()
            let (a, b) = try await (one, two)
            #expect(a.failed == 0 && b.failed == 0 && a.sent + b.sent >= 1)
            #expect(platform.totals == ["cus_acme/api_requests": 18, "globex/api_requests": 7])
            let globex = try await fixture.writer.perform { store throws(LedgerError) in try store.exportRecords(tenant: "globex") }
            #expect(globex.count == 2 && globex.allSatisfy { $0.status == .sent })

            // Nothing new: nothing is sent.
            let before = platform.state.withLock { $0.requests }
            let idle = try await first.runOnce()
            #expect(idle.sent == 0 && idle.requests == 0 && idle.alreadySent == 6)
            #expect(platform.state.withLock { $0.requests } == before)
            await restarted.shutdown()
        }
        await fixture.shutdown()
    }

    /// Real collectors with an `exports:` config: one on SQLite, or two on one PostgreSQL ledger.
    /// They push at start and then on their schedule, with the key from its file and the
    /// configured meter and customer names; the platform gets each hour's usage once, then the
    /// difference only, whichever collector sends it.
    @Test(arguments: ["sqlite", "postgres"])
    func theCollectorsPushOnTheirSchedule(_ backend: String) async throws {
        let store: String
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tally-exports-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        if backend == "postgres" {
            guard let server = try await PostgresTestServer.shared() else { return }
            store = try server.createDatabase("exports")
        } else {
            store = "sqlite:\(directory.path)/ledger.db"
        }
        let pricingPath = directory.appendingPathComponent("pricing.yaml").path
        try BillingFixture.pricingYAML.write(toFile: pricingPath, atomically: true, encoding: .utf8)
        let keyPath = directory.appendingPathComponent("stripe.key").path
        try "\(StrictPlatform.key)\n".write(toFile: keyPath, atomically: true, encoding: .utf8)
        let platform = StrictPlatform()
        platform.state.withLock { $0.faults = [.tooManyRequests] }
        try await platform.application().test(.live) { client in
            let port = try #require(client.port)
            var config = try CollectorConfig.load(
                yaml: """
                    store: \(store)
                    listen: 127.0.0.1:0
                    http: 127.0.0.1:0
                    pricing: \(pricingPath)
                    exports:
                      base_url: http://127.0.0.1:\(port)
                      api_key_file: \(keyPath)
                      every: 1s
                      meters: {api_calls: api_requests}
                      customers: {acme: cus_acme}
                      initial_backoff: 1ms
                    """)
            config.adminKey = "admin-0123456789abcdef"
            var collectors = [try await startCollector(config)]
            if backend == "postgres" { collectors.append(try await startCollector(config)) }
            let ledger = collectors[0].ledger
            // An hour closed before the test began: due at the next run.
            let hour = EventTime.now().hourSinceEpoch - 1
            let closed = EventTime(startOfHour: hour).advanced(by: .seconds(600))
            func event(_ tenant: String, _ quantity: Int64, id: String) -> IncomingEvent {
                .valid(UsageEvent(tenant: tenant, metric: "api_calls", quantity: Quantity(quantity), timestamp: closed, id: id))
            }
            _ = try await ledger.commit(
                IncomingBatch(agent: "edge-1", sequence: 1, receivedAt: .now(), events: [event("acme", 5, id: "a"), event("globex", 2, id: "b")]))
            let first = ["cus_acme/api_requests": 5, "globex/api_requests": 2]
            #expect(await platform.waitForTotals(first) == first)
            // More usage in the same hour: the next run sends the difference only.
            _ = try await ledger.commit(
                IncomingBatch(agent: "edge-1", sequence: 2, receivedAt: .now(), events: [event("acme", 3, id: "c")]))
            let second = ["cus_acme/api_requests": 8, "globex/api_requests": 2]
            #expect(await platform.waitForTotals(second) == second)
            let records = try await ledger.perform { store throws(LedgerError) in try store.exportRecords(tenant: nil) }
            for collector in collectors {
                collector.running.cancel()
                _ = try? await collector.running.value
            }
            let state = platform.state.withLock { $0 }
            #expect(state.unauthorized == 0 && state.recorded.count == 3 && state.faults.isEmpty)
            #expect(state.recorded[MeterEventExporter.identifier(tenant: "acme", metric: "api_calls", hour: hour, revision: 2)]?.value == 3)
            // The ledger holds one record per value the platform has, with the same values.
            #expect(Set(records.map(\.identifier)) == Set(state.recorded.keys))
            for record in records { #expect(record.value == Quantity(Int64(state.recorded[record.identifier]?.value ?? -1))) }
        }
        if backend == "postgres", let server = try await PostgresTestServer.shared(), let name = PostgresTestServer.databaseName(in: store) {
            server.dropDatabase(name)
        }
    }

    @Test func answersAreClassifiedLikeThePlatformMeansThem() {
        #expect(MeterEventExporter.answer(status: 200, body: "{}") == .delivered)
        #expect(MeterEventExporter.answer(status: 400, body: #"{"error":{"code":"resource_already_exists"}}"#) == .alreadyDelivered)
        #expect(MeterEventExporter.answer(status: 400, body: #"{"error":{"code":"parameter_missing"}}"#) == .refused)
        #expect(MeterEventExporter.answer(status: 401, body: "") == .refused)
        for status in [408, 409, 429, 500, 502, 503] { #expect(MeterEventExporter.answer(status: status, body: "") == .retry) }
    }

    @Test func timestampsAreTheHourUnlessThePlatformWouldRefuseIt() async throws {
        let now = try EventTime(parsing: "2026-04-20T12:34:56Z")
        let recent = try EventTime(parsing: "2026-03-20T10:00:00Z").hourSinceEpoch
        #expect(MeterEventExporter.timestamp(hour: recent, now: now) == recent * 3600)
        let old = try EventTime(parsing: "2026-03-01T10:00:00Z").hourSinceEpoch
        #expect(MeterEventExporter.timestamp(hour: old, now: now) == now.seconds)
        let settings = MeterEventExporter.Settings(baseURL: "http://127.0.0.1:1", customers: ["acme": "cus_1"], meters: ["api_calls": "calls"])
        let fixture = try BillingFixture()
        let body = MeterEventExporter(service: fixture.service, settings: settings).formBody(
            ExportRecord(identifier: "id 1", tenant: "acme", metric: "api_calls", hour: old, value: Quantity(7), status: .pending, attempts: 0),
            now: now)
        #expect(body == "event_name=calls&payload%5Bstripe_customer_id%5D=cus_1&payload%5Bvalue%5D=7&timestamp=\(now.seconds)&identifier=id%201")
        await fixture.shutdown()
    }

    @Test func backoffIsJitteredWithinItsBounds() {
        var seen: Set<Duration> = []
        for _ in 0..<200 {
            let wait = MeterEventExporter.jittered(.milliseconds(100))
            #expect(wait >= .milliseconds(50) && wait <= .milliseconds(100))
            seen.insert(wait)
        }
        #expect(seen.count > 1)
    }

    @Test func identifiersAreStableAndDistinct() {
        let a = MeterEventExporter.identifier(tenant: "acme", metric: "api_calls", hour: 493_000, revision: 1)
        #expect(a == MeterEventExporter.identifier(tenant: "acme", metric: "api_calls", hour: 493_000, revision: 1))
        #expect(a != MeterEventExporter.identifier(tenant: "acme", metric: "api_calls", hour: 493_000, revision: 2))
        #expect(a != MeterEventExporter.identifier(tenant: "acme", metric: "api_calls", hour: 493_001, revision: 1))
        #expect(a != MeterEventExporter.identifier(tenant: "acme", metric: "bytes_out", hour: 493_000, revision: 1))
        // A tenant name too long for the platform: a hash, still stable and distinct.
        let long = String(repeating: "t", count: 90)
        let hashed = MeterEventExporter.identifier(tenant: long, metric: "api-calls", hour: 493_000, revision: 3)
        #expect(hashed.count <= MeterEventExporter.maxIdentifierLength && hashed.hasPrefix("tally-") && hashed.hasSuffix("-r3"))
        #expect(hashed == MeterEventExporter.identifier(tenant: long, metric: "api-calls", hour: 493_000, revision: 3))
        #expect(hashed != MeterEventExporter.identifier(tenant: long, metric: "api-calls", hour: 493_001, revision: 3))
        #expect(hashed != MeterEventExporter.identifier(tenant: long + "-api", metric: "calls", hour: 493_000, revision: 3))
    }
}
