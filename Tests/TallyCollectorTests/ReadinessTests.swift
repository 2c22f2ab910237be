import Foundation
import Hummingbird
import HummingbirdTesting
import Prometheus
import TallyCore
import TallyWire
import Testing
@testable import TallyCollector
@testable import TallyLedger
import TallyTestSupport

/// `/readyz` used to stay 200 while every commit failed (a full ledger disk). It turns 503 with
/// the store's reason while the latest commit fails, and 200 again after one succeeds.
@Suite(.serialized) struct ReadinessTests {
    /// A ledger whose disk can be filled and freed: a real 16 MiB tmpfs when the tests run as
    /// root (as CI does), else the store's injected SQLITE_FULL.
    final class FullableLedger {
        let directory: URL
        let path: String
        let mounted: Bool
        private var filler: URL { directory.appendingPathComponent("filler") }

        init() throws {
            directory = FileManager.default.temporaryDirectory.appendingPathComponent("tally-ready-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            path = directory.appendingPathComponent("ledger.db").path
            // Root may still be refused a mount (a container without CAP_SYS_ADMIN): then the
            // injected fault stands in for the real disk.
            mounted = getuid() == 0 && (try? Self.run("/usr/bin/mount", ["-t", "tmpfs", "-o", "size=16m", "tmpfs", directory.path])) != nil
        }

        /// Fills the filesystem to the last byte (or injects the fault into `store`).
        func fill(_ writer: Ledger) async throws {
            guard mounted else {
                try await writer.perform { store throws(LedgerError) in (store as? SQLiteLedgerStore)?.fault = .diskFull }
                return
            }
            _ = FileManager.default.createFile(atPath: filler.path, contents: nil)
            let handle = try FileHandle(forWritingTo: filler)
            defer { try? handle.close() }
            let chunk = Data(count: 64 << 10)
            var written = 0
            do {
                while written < 64 << 20 {
                    try handle.write(contentsOf: chunk)
                    written += chunk.count
                }
                Issue.record("a 16 MiB tmpfs took 64 MiB")
            } catch {
                // ENOSPC: the disk is full. Fill the last partial chunk too.
                let small = Data(count: 512)
                while (try? handle.write(contentsOf: small)) != nil {}
            }
        }

        func free(_ writer: Ledger) async throws {
            guard mounted else {
                try await writer.perform { store throws(LedgerError) in (store as? SQLiteLedgerStore)?.fault = nil }
                return
            }
            try FileManager.default.removeItem(at: filler)
        }

        func remove() {
            // Lazy: a test that failed half-way may still hold the database open.
            if mounted { try? Self.run("/usr/bin/umount", ["-l", directory.path]) }
            try? FileManager.default.removeItem(at: directory)
        }

        static func run(_ tool: String, _ arguments: [String]) throws {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: tool)
            process.arguments = arguments
            try ChildSpawner.run(process)  // one spawning thread: see ChildSpawner
            process.waitUntilExit()
            guard process.terminationStatus == 0 else { throw FixtureError("\(tool) \(arguments) exited \(process.terminationStatus)") }
        }
    }

    static func batch(_ sequence: UInt64, events count: Int) throws -> IncomingBatch {
        let receivedAt = try EventTime(parsing: "2026-03-10T10:05:00Z")
        let events = (0..<count).map { index in
            IncomingEvent.valid(
                UsageEvent(
                    tenant: "tenant-\(index % 97)", metric: "api_calls", quantity: Quantity(Int64(index + 1)),
                    timestamp: EventTime(microseconds: receivedAt.microseconds - Int64(index) * 1_000_000),
                    id: "request-\(sequence)-\(index)-\(UUID().uuidString)",
                    properties: Properties([("endpoint", "/api/v1/items/\(index)")])))
        }
        return IncomingBatch(agent: "edge-1", sequence: sequence, receivedAt: receivedAt, events: events)
    }

    static func readyz(_ writer: Ledger) async throws -> (HTTPResponse.Status, String) {
        let app = Application(router: CollectorHTTP.router(registry: PrometheusCollectorRegistry(), readiness: { writer.readiness() }))
        return try await app.test(.router) { client in
            try await client.execute(uri: "/readyz", method: .get) { response in (response.status, response.text) }
        }
    }

    @Test func readyzFollowsTheLatestCommit() async throws {
        let disk = try FullableLedger()
        defer { disk.remove() }
        let writer = Ledger(store: try SQLiteLedgerStore(path: disk.path))
        _ = try await writer.commit(try Self.batch(1, events: 10))
        #expect(try await Self.readyz(writer).0 == .ok)

        try await disk.fill(writer)
        // Big enough to need new pages whatever the WAL already holds.
        let big = try Self.batch(2, events: 5_000)
        await #expect(throws: LedgerError.self) { _ = try await writer.commit(big) }
        let (status, body) = try await Self.readyz(writer)
        #expect(status == .serviceUnavailable)
        #expect(body.hasPrefix("not ready: the latest ledger commit failed"), "\(body)")
        #expect(body.contains("full"), "\(body)")
        // On the mounted tmpfs the failure is the real one, not the injected fault.
        #expect(disk.mounted == !body.contains("injected"), "\(body)")
        #expect(writer.commitFailure?.isStoreFailure == true)
        // Still failing: still not ready.
        await #expect(throws: LedgerError.self) { _ = try await writer.commit(big) }
        #expect(try await Self.readyz(writer).0 == .serviceUnavailable)

        try await disk.free(writer)
        let outcome = try await writer.commit(big)
        #expect(outcome.accepted == 5_000)
        let (after, afterBody) = try await Self.readyz(writer)
        #expect(after == .ok && afterBody == "ready\n")
        #expect(writer.commitFailure == nil)
        await writer.shutdown()
    }

    /// Through the ingest path, as agents reach it: failed commits are counted, and the
    /// `tally_collector_ledger_writable` gauge goes to 0 and back to 1.
    @Test func ingestMetricsFollowTheLedger() async throws {
        let disk = try FullableLedger()
        defer { disk.remove() }
        let writer = Ledger(store: try SQLiteLedgerStore(path: disk.path))
        let registry = PrometheusCollectorRegistry()
        let ingest = try BatchIngest(
            limits: .standard, eventLimits: EventLimits(), ledger: writer,
            metrics: CollectorMetrics(factory: PrometheusMetricsFactory(registry: registry)),
            clock: { (try? EventTime(parsing: "2026-03-10T10:05:00Z")) ?? EventTime(microseconds: 0) })
        let encoder = try BatchPayloadEncoder(compression: .none)
        func batch(_ sequence: UInt64, events count: Int) throws -> Batch {
            let events = try Self.batch(sequence, events: count).events.compactMap { item -> UsageEvent? in
                if case .valid(let event) = item { event } else { nil }
            }
            return Batch(sequence: sequence, payload: try encoder.encode(events))
        }
        func metric(_ name: String) -> Double? {
            var bytes: [UInt8] = []
            registry.emit(into: &bytes)
            let line = String(decoding: bytes, as: UTF8.self).split(separator: "\n").first { $0.hasPrefix(name + " ") }
            return line.flatMap { Double($0.dropFirst(name.count + 1)) }
        }

        _ = try await ingest.process(try batch(1, events: 10), agent: "edge-1") { _ in true }
        #expect(metric("tally_collector_ledger_writable") == 1)
        try await disk.fill(writer)
        let big = try batch(2, events: 5_000)
        await #expect(throws: LedgerError.self) { _ = try await ingest.process(big, agent: "edge-1") { _ in true } }
        #expect(metric("tally_collector_ledger_writable") == 0)
        #expect(metric("tally_collector_commit_failures_total") == 1)
        #expect(try await Self.readyz(writer).0 == .serviceUnavailable)

        try await disk.free(writer)
        let ack = try await ingest.process(big, agent: "edge-1") { _ in true }
        #expect(ack.accepted == 5_000)
        #expect(metric("tally_collector_ledger_writable") == 1)
        #expect(metric("tally_collector_commit_failures_total") == 1)
        #expect(try await Self.readyz(writer).0 == .ok)
        await writer.shutdown()
    }

    /// A batch refused for what it is (a reused sequence) says nothing about the disk.
    @Test func aRefusedBatchLeavesTheCollectorReady() async throws {
        let disk = try FullableLedger()
        defer { disk.remove() }
        let writer = Ledger(store: try SQLiteLedgerStore(path: disk.path))
        _ = try await writer.commit(try Self.batch(1, events: 3))
        await #expect(throws: LedgerError.self) { _ = try await writer.commit(try Self.batch(1, events: 4)) }
        #expect(try await Self.readyz(writer).0 == .ok)
        await writer.shutdown()
    }
}
