import Foundation
import TallyCore
@testable import TallyLedger
import TallyTestSupport
import TallyWorkload

/// Makes stores for the contract suite. A PostgreSQL backend adds its own factory to
/// `ledgerFactories` and runs the same tests.
protocol LedgerStoreFactory: Sendable, CustomStringConvertible {
    /// A new, empty place for a store (a file path, a database schema).
    func newLocation() throws -> String
    /// Opens the store at `location`; reopening sees everything committed before.
    func open(_ location: String, configuration: LedgerConfiguration) throws -> any LedgerStore
    /// Removes what `newLocation` made.
    func destroy(_ location: String)
    /// Makes the store's next commit write everything and then die without committing, as a
    /// process killed at that instant would.
    func crashBeforeNextCommit(_ store: any LedgerStore)
}

struct SQLiteFactory: LedgerStoreFactory {
    var description: String { "SQLite" }

    func newLocation() throws -> String {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tally-ledger-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        return directory.appendingPathComponent("ledger.db").path
    }

    func open(_ location: String, configuration: LedgerConfiguration) throws -> any LedgerStore {
        try SQLiteLedgerStore(path: location, configuration: configuration)
    }

    func destroy(_ location: String) {
        try? FileManager.default.removeItem(atPath: (location as NSString).deletingLastPathComponent)
    }

    func crashBeforeNextCommit(_ store: any LedgerStore) {
        (store as? SQLiteLedgerStore)?.fault = .crashBeforeCommit
    }
}

/// The PostgreSQL backend, each test in a fresh database of the run's one throwaway server
/// (TallyTestSupport). Where PostgreSQL is not installed and CI is not set, the suite runs on
/// SQLite only and says so on stderr; in CI a server that cannot start fails every PostgreSQL case.
struct PostgresFactory: LedgerStoreFactory {
    var description: String { "PostgreSQL" }

    func newLocation() throws -> String {
        guard let server = try PostgresTestServer.shared() else { throw PostgresTestServerError.system("no PostgreSQL") }
        return try server.createDatabase("ledger")
    }

    func open(_ location: String, configuration: LedgerConfiguration) throws -> any LedgerStore {
        try PostgresLedgerStore(address: PostgresAddress(parsing: location), configuration: configuration)
    }

    func destroy(_ location: String) {
        guard let server = try? PostgresTestServer.shared(), let name = PostgresTestServer.databaseName(in: location) else { return }
        server.dropDatabase(name)
    }

    func crashBeforeNextCommit(_ store: any LedgerStore) {
        (store as? PostgresLedgerStore)?.crashBeforeNextCommit = true
    }
}

let ledgerFactories: [any LedgerStoreFactory] = {
    var factories: [any LedgerStoreFactory] = [SQLiteFactory()]
    do {
        if try PostgresTestServer.shared() != nil { factories.append(PostgresFactory()) }
    } catch {
        // CI, or PostgreSQL installed but broken: keep the cases, so each one fails with the reason.
        factories.append(PostgresFactory())
    }
    return factories
}()

/// A store under test, with its location so it can be reopened.
final class TestLedger {
    let factory: any LedgerStoreFactory
    let location: String
    let configuration: LedgerConfiguration
    var store: any LedgerStore

    init(_ factory: any LedgerStoreFactory, configuration: LedgerConfiguration = TestLedger.configuration) throws {
        self.factory = factory
        self.configuration = configuration
        let location = try factory.newLocation()
        self.location = location
        do {
            store = try factory.open(location, configuration: configuration)
        } catch {
            factory.destroy(location)
            throw error
        }
    }

    static let configuration = LedgerConfiguration(
        groupBy: ["endpoint"], uniqueCounts: [UniqueCountKey(metric: "active_users", property: "user")])

    /// ``configuration`` for workloads spanning months, whose writer folds only when a test says.
    static var foldingOnRequest: LedgerConfiguration {
        var configuration = Self.configuration
        configuration.aggregateBufferCells = 1 << 30
        configuration.lateWindow.lateArrivalLimit = .seconds(90 * 86_400)
        configuration.dedupeHorizon = .seconds(90 * 86_400)
        return configuration
    }

    func reopen() throws {
        store.close()
        store = try factory.open(location, configuration: configuration)
    }

    deinit {
        store.close()
        factory.destroy(location)
    }
}

func at(_ text: String) -> EventTime {
    (try? EventTime(parsing: text)) ?? EventTime(microseconds: 0)
}

func period(_ text: String) -> BillingPeriod {
    BillingPeriod(text) ?? BillingPeriod(containing: EventTime(microseconds: 0))
}

func event(
    _ tenant: String = "acme", _ metric: String = "api_calls", quantity: String = "1", at time: String = "2026-04-13T12:00:00Z",
    id: String? = nil, _ properties: [(String, String)] = []
) -> UsageEvent {
    UsageEvent(
        tenant: tenant, metric: metric, quantity: (try? Quantity(parsing: quantity)) ?? .zero, timestamp: at(time), id: id,
        properties: Properties(properties))
}

func batch(_ sequence: UInt64, agent: String = "agent-1", now: String = "2026-04-13T13:00:00Z", _ events: [UsageEvent]) -> IncomingBatch {
    IncomingBatch(agent: agent, sequence: sequence, receivedAt: at(now), events: events.map { .valid($0) })
}

/// A deterministic workload: tenants, metrics, endpoints, fractional quantities, request ids,
/// some retries of earlier events, timestamps moving forward within `start ..< start + span`.
/// With `skewed`, tenant traffic is heavily skewed (tenant = ⌊n·u³⌋, a Zipf-like head), as in the
/// reference workload; otherwise tenants are uniform (the worst case for aggregate locality).
func workload(count: Int, seed: UInt64, start: EventTime, spanHours: Int64, tenants: Int = 20, skewed: Bool = false) -> [UsageEvent] {
    var random = SplitMix64(seed: seed)
    let metrics = ["api_calls", "bytes_out", "compute_ms", "exports"]
    var events: [UsageEvent] = []
    events.reserveCapacity(count)
    let step = spanHours * 3_600_000_000 / Int64(max(count, 1))
    for index in 0..<count {
        if index > 10, random.next() % 100 == 0 {
            events.append(events[Int(random.next() % UInt64(events.count))])  // a client retry
            continue
        }
        let nanos = Int128(random.next() % 5_000_000_000_000) + 1
        let time = EventTime(microseconds: start.microseconds + Int64(index) * step + Int64(random.next() % 1000))
        events.append(
            UsageEvent(
                tenant: "tenant-\(tenantIndex(&random, tenants, skewed))", metric: metrics[Int(random.next() % 4)],
                quantity: Quantity(nanos: nanos), timestamp: time, id: "req-\(random.next())",
                properties: Properties([("endpoint", "/api/v\(random.next() % 5)"), ("region", "eu")])))
    }
    return events
}

private func tenantIndex(_ random: inout SplitMix64, _ tenants: Int, _ skewed: Bool) -> Int {
    guard skewed else { return Int(random.next() % UInt64(tenants)) }
    let u = Double(random.next() >> 11) / Double(1 << 53)  // sampling only; never a quantity
    return min(tenants - 1, Int(Double(tenants) * u * u * u))
}
