import Foundation
import Hummingbird
import HummingbirdTesting
import Prometheus
import Testing
import TallyLedger

@testable import TallyCollector

/// The HTTP API's own metrics, which the dashboard's query latency and the alert on refused API
/// keys read (deploy/monitoring/): every request timed and counted by its route's pattern, and
/// the embedded ledger's filesystem read at each scrape.
@Suite struct HTTPMetricsTests {
    /// One line of the exposition: the value of `series` (name and labels as written), if any.
    static func value(_ series: String, in exposition: String) -> Double? {
        exposition.split(separator: "\n").first { $0.hasPrefix(series + " ") }.flatMap { Double($0.dropFirst(series.count + 1)) }
    }

    @Test func requestsAreTimedAndCountedByRouteAndStatus() async throws {
        let fixture = try BillingFixture()
        let registry = PrometheusCollectorRegistry()
        let router = CollectorHTTP.router(
            registry: registry, readiness: { .notReady(reason: "the latest ledger commit failed") },
            api: CollectorAPI(service: fixture.service, access: APIAccess(adminKey: BillingFixture.adminKey, tenantKeys: [:])),
            requestMetrics: HTTPRequestMetrics(factory: PrometheusMetricsFactory(registry: registry)))
        let exposition = try await Application(router: router).test(.router) { client in
            #expect(try await client.execute(uri: "/healthz", method: .get) { $0.status } == .ok)
            #expect(try await client.execute(uri: "/readyz", method: .get) { $0.status } == .serviceUnavailable)
            // A refused key, twice; then the admin key, for a tenant a plan assignment names.
            for _ in 0..<2 {
                let status = try await client.execute(uri: "/v1/tenants/acme/charges", method: .get, headers: bearer("not-a-key-0123456789")) {
                    $0.status
                }
                #expect(status == .unauthorized)
            }
            let admitted = try await client.execute(uri: "/v1/tenants/globex/charges", method: .get, headers: bearer(BillingFixture.adminKey)) {
                $0.status
            }
            #expect(admitted == .ok)
            // Paths no route matches share one label, whatever was sent.
            #expect(try await client.execute(uri: "/no/such/\(UUID().uuidString)", method: .get) { $0.status } == .notFound)
            #expect(try await client.execute(uri: "/no/such/other", method: .get) { $0.status } == .notFound)
            return try await client.execute(uri: "/metrics", method: .get) { $0.text }
        }
        await fixture.shutdown()

        let charges = "/v1/tenants/{tenant}/charges"
        #expect(Self.value(#"tally_collector_http_requests_total{route="/healthz",status="200"}"#, in: exposition) == 1, "\(exposition)")
        #expect(Self.value(#"tally_collector_http_requests_total{route="/readyz",status="503"}"#, in: exposition) == 1)
        #expect(Self.value(#"tally_collector_http_requests_total{route="\#(charges)",status="401"}"#, in: exposition) == 2)
        #expect(Self.value(#"tally_collector_http_requests_total{route="\#(charges)",status="200"}"#, in: exposition) == 1)
        #expect(Self.value(#"tally_collector_http_requests_total{route="unmatched",status="404"}"#, in: exposition) == 2)
        #expect(!exposition.contains("/no/such"), "a path as sent must never become a label")
        #expect(Self.value(#"tally_collector_http_request_seconds_count{route="\#(charges)"}"#, in: exposition) == 3)
        let sum = try #require(Self.value(#"tally_collector_http_request_seconds_sum{route="\#(charges)"}"#, in: exposition))
        #expect(sum > 0 && sum < 60)
    }

    @Test func theLedgerFilesystemIsReadAtEachScrape() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tally-fs-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let registry = PrometheusCollectorRegistry()
        let gauges = LedgerFilesystemGauges(
            ledgerPath: directory.appendingPathComponent("ledger.db").path, factory: PrometheusMetricsFactory(registry: registry))
        #expect(gauges.directory == directory.path)
        let router = CollectorHTTP.router(registry: registry, readiness: { .ready }, beforeScrape: { gauges.refresh() })
        let exposition = try await Application(router: router).test(.router) { client in
            try await client.execute(uri: "/metrics", method: .get) { $0.text }
        }
        let available = try #require(Self.value("tally_collector_ledger_filesystem_avail_bytes", in: exposition), "\(exposition)")
        let size = try #require(Self.value("tally_collector_ledger_filesystem_size_bytes", in: exposition))
        // statfs of the same directory, through Foundation: the same filesystem's size.
        let attributes = try FileManager.default.attributesOfFileSystem(forPath: directory.path)
        let expectedSize = try #require((attributes[.systemSize] as? NSNumber)?.doubleValue)
        #expect(size == expectedSize)
        #expect(available > 0 && available <= size)
    }

    /// The write-ahead log's size and the checkpoints (``WALCheckpointer``) at each scrape: the
    /// counters add what the checkpointer counted since the last scrape.
    @Test func theLogAndItsCheckpointsAreReadAtEachScrape() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tally-wal-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let ledgerPath = directory.appendingPathComponent("ledger.db").path
        let registry = PrometheusCollectorRegistry()
        let gauges = LedgerFilesystemGauges(ledgerPath: ledgerPath, factory: PrometheusMetricsFactory(registry: registry))
        func scrape(_ counts: WALCheckpointer.Checkpoints) -> String {
            gauges.refresh(checkpoints: counts)
            var bytes: [UInt8] = []
            registry.emit(into: &bytes)
            return String(decoding: bytes, as: UTF8.self)
        }
        let before = scrape(WALCheckpointer.Checkpoints(background: 3, writer: 1))
        #expect(Self.value("tally_collector_ledger_wal_bytes", in: before) == 0, "no log file yet: \(before)")
        #expect(Self.value(#"tally_collector_ledger_checkpoints_total{where="background"}"#, in: before) == 3, "\(before)")
        try Data(repeating: 7, count: 12_345).write(to: URL(fileURLWithPath: ledgerPath + "-wal"))
        let after = scrape(WALCheckpointer.Checkpoints(background: 5, writer: 1, failed: 2))
        #expect(Self.value("tally_collector_ledger_wal_bytes", in: after) == 12_345)
        #expect(Self.value(#"tally_collector_ledger_checkpoints_total{where="background"}"#, in: after) == 5)
        #expect(Self.value(#"tally_collector_ledger_checkpoints_total{where="writer"}"#, in: after) == 1)
        #expect(Self.value(#"tally_collector_ledger_checkpoints_total{where="failed"}"#, in: after) == 2)
    }

    @Test func aMissingLedgerDirectoryKeepsTheGaugesUnset() async throws {
        let registry = PrometheusCollectorRegistry()
        let gauges = LedgerFilesystemGauges(
            ledgerPath: "/nonexistent-\(UUID().uuidString)/ledger.db", factory: PrometheusMetricsFactory(registry: registry))
        gauges.refresh()
        var bytes: [UInt8] = []
        registry.emit(into: &bytes)
        let exposition = String(decoding: bytes, as: UTF8.self)
        #expect(Self.value("tally_collector_ledger_filesystem_size_bytes", in: exposition) == 0, "\(exposition)")
    }

    @Test(arguments: [("ledger.db", "."), ("/ledger.db", "/"), ("/var/lib/tally/ledger.db", "/var/lib/tally"), ("a/b", "a")])
    func theLedgerDirectoryIsTheFilesParent(_ path: String, _ directory: String) {
        #expect(LedgerFilesystemGauges.directory(containing: path) == directory)
    }
}
