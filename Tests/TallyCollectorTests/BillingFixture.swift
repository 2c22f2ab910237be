import Foundation
import Hummingbird
import Logging
import HummingbirdTesting
import Prometheus
import Synchronization
import TallyCore
import TallyLedger
import TallyPricing
@testable import TallyCollector
import TallyTestSupport

/// A ledger on a temporary SQLite file behind a `Ledger`, an invoice service with a
/// settable clock, and the HTTP router, for the billing tests.
final class BillingFixture: Sendable {
    /// Changes the ledger file behind the collector's back with the `sqlite3` shell; its exit status.
    func tamper(_ sql: String) throws -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/sqlite3")
        process.arguments = [path, sql]
        try ChildSpawner.run(process)  // one spawning thread: see ChildSpawner
        process.waitUntilExit()
        return process.terminationStatus
    }

    static let pricingYAML = """
        metrics:
          - name: api_calls
            aggregation: sum
            group_by: [endpoint]
          - name: exports
            aggregation: count
            filters:
              - property: status
                not_in: ["500"]
        plans:
          - id: starter
            currency: USD
            charges:
              - metric: api_calls
                model: per_unit
                free: 50000
                unit_price: "0.001"
              - metric: exports
                model: package
                package_size: 100
                package_price: "5.00"
          - id: pro
            currency: USD
            charges:
              - metric: api_calls
                price_by: endpoint
                prices:
                  - when: /search
                    model: per_unit
                    unit_price: "0.002"
                  - model: graduated
                    tiers:
                      - up_to: 1000
                        unit_price: "0.01"
                      - unit_price: "0.005"
        default_plan: starter
        assignments:
          - tenant: globex
            plan: pro
            from: 2026-01-01T00:00:00Z
        """

    let path: String
    let writer: Ledger
    let service: Invoicing
    let pricing: AggregatePricing
    let clock: TestClock
    let sequence = Mutex<UInt64>(0)
    let lateWindow = LateWindow.standard

    init(now: String = "2026-03-20T12:00:00Z", pricingYAML: String = BillingFixture.pricingYAML) throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tally-billing-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        path = directory.appendingPathComponent("ledger.db").path
        pricing = AggregatePricing(config: try PricingConfigLoader.load(yaml: pricingYAML))
        let configuration = AggregatePricing.ledgerConfiguration(for: pricing.config)
        writer = Ledger(
            store: try SQLiteLedgerStore(path: path, configuration: configuration),
            reader: try SQLiteLedgerStore(path: path, configuration: configuration))
        let clock = TestClock(try EventTime(parsing: now))
        self.clock = clock
        service = Invoicing(ledger: writer, pricing: pricing, lateWindow: .standard, clock: { clock.now })
    }

    func setNow(_ text: String) throws {
        let time = try EventTime(parsing: text)
        clock.set(time)
    }

    var now: EventTime { clock.now }

    /// Commits one batch, received now, through the writer.
    @discardableResult
    func commit(_ events: [UsageEvent], agent: String = "edge-1") async throws -> BatchOutcome {
        let next = sequence.withLock { value -> UInt64 in
            value += 1
            return value
        }
        return try await writer.commit(IncomingBatch(agent: agent, sequence: next, receivedAt: now, events: events.map { .valid($0) }))
    }

    static func event(
        _ tenant: String, metric: String = "api_calls", _ quantity: Int64 = 1, at time: String, id: String,
        _ properties: [(String, String)] = []
    ) throws -> UsageEvent {
        UsageEvent(
            tenant: tenant, metric: metric, quantity: Quantity(quantity), timestamp: try EventTime(parsing: time), id: id,
            properties: Properties(properties))
    }

    static let adminKey = "admin-secret-0123456789"
    static let acmeKey = "acme-key-0123456789abc"
    static let globexKey = "globex-key-0123456789"

    func application() -> some ApplicationProtocol {
        let router = CollectorHTTP.router(
            registry: PrometheusCollectorRegistry(), readiness: { .ready },
            api: CollectorAPI(
                service: service,
                access: APIAccess(adminKey: Self.adminKey, tenantKeys: [Self.acmeKey: "acme", Self.globexKey: "globex"])))
        return Application(router: router)
    }

    func shutdown() async { await writer.shutdown() }

    /// Another collector process on the same ledger file (after a restart, or a cluster's other
    /// node): its own stores and invoice service, the same clock.
    struct Reopened {
        let writer: Ledger
        let service: Invoicing
        func shutdown() async { await writer.shutdown() }
    }

    static func reopen(_ fixture: BillingFixture) throws -> Reopened {
        let configuration = AggregatePricing.ledgerConfiguration(for: fixture.pricing.config)
        let writer = Ledger(
            store: try SQLiteLedgerStore(path: fixture.path, configuration: configuration),
            reader: try SQLiteLedgerStore(path: fixture.path, configuration: configuration))
        let clock = fixture.clock
        return Reopened(
            writer: writer, service: Invoicing(ledger: writer, pricing: fixture.pricing, lateWindow: .standard, clock: { clock.now }))
    }
}

extension TestResponse {
    var text: String { String(buffer: body) }

    func json() throws -> [String: Any] {
        guard let object = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
            throw FixtureError("not a JSON object: \(text)")
        }
        return object
    }
}

struct FixtureError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

func bearer(_ key: String) -> HTTPFields { [.authorization: "Bearer \(key)"] }

/// A settable clock shared with the service under test.
final class TestClock: Sendable {
    private let value: Mutex<EventTime>
    init(_ start: EventTime) { value = Mutex(start) }
    var now: EventTime { value.withLock { $0 } }
    func set(_ time: EventTime) { value.withLock { $0 = time } }
}

/// Starts a real collector with `config` (in this process); its running task and its ledger.
/// The test process's event loops are every test's: they stay on the normal policy (the
/// real-time policy is tested on collector processes, `RealtimeEventLoopTests`).
func startCollector(_ config: CollectorConfig) async throws -> (running: Task<Void, any Error>, ledger: Ledger) {
    var config = config
    config.realtimePriority = 0
    let (opened, ledgerOpened) = AsyncStream.makeStream(of: Ledger.self)
    let running = Task {
        defer { ledgerOpened.finish() }
        let collector = try await Collector.start(config: config, registry: PrometheusCollectorRegistry(), logger: Logger(label: "test"))
        ledgerOpened.yield(collector.ledger)
        try await collector.run()
    }
    var ledgers = opened.makeAsyncIterator()
    guard let ledger = await ledgers.next() else {
        try await running.value
        throw FixtureError("the collector did not start")
    }
    return (running, ledger)
}

/// Starts a real collector with `config` (in this process, on the normal policy, as
/// ``startCollector(_:)``) and waits until its HTTP API listens: its running task and the API's
/// port.
func startCollectorServingHTTP(_ config: CollectorConfig) async throws -> (running: Task<Void, any Error>, port: Int) {
    var config = config
    config.realtimePriority = 0
    let collector = try await Collector.start(config: config, registry: PrometheusCollectorRegistry(), logger: Logger(label: "test"))
    let (ports, sink) = AsyncStream.makeStream(of: Int.self)
    let running = Task {
        defer { sink.finish() }
        try await collector.run(httpBound: { sink.yield($0) })
    }
    var iterator = ports.makeAsyncIterator()
    guard let port = await iterator.next() else {
        try await running.value
        throw FixtureError("the collector's HTTP API did not start")
    }
    return (running, port)
}
