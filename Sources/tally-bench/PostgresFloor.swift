import Foundation
import Logging
import NIOCore
import PostgresNIO
import TallyCore
import TallyTestSupport
import TallyWorkload

/// The PostgreSQL floor beside the cluster figure in `tally-bench cluster`: only the raw rows
/// Tally stores, and nothing else a batch does. The same columns as the ledger's `raw_events`
/// and its `(ts, fingerprint)` key, 1,000 rows per statement through `unnest` with
/// `ON CONFLICT DO NOTHING` (one transaction, so one fsync'd WAL flush, per 1,000), rows sorted by
/// key, from several connections. No batch record, duplicates, aggregate log, fold or
/// reconciliation, no collector, no agent. What it shows is the server's own cost per stored
/// event on this machine: the cluster's figure cannot pass the floor's rate, and the floor's
/// PostgreSQL CPU per event says how many events per second the cores could store at all.
enum PostgresFloor {
    struct Row: Sendable {
        var timestamp: Int64
        var fingerprint: [UInt8]
        var tenant: String
        var metric: String
        var quantity: String
        var id: String?
        var properties: [UInt8]
    }

    static let createTable = """
        CREATE TABLE floor_events (ts bigint NOT NULL, fingerprint bytea NOT NULL, tenant text NOT NULL, metric text NOT NULL,
            quantity text NOT NULL, event_id text, properties bytea NOT NULL, status text NOT NULL, billed_in text, agent text NOT NULL,
            batch_seq bigint NOT NULL, batch_index integer NOT NULL, received_at bigint NOT NULL, PRIMARY KEY (ts, fingerprint))
        """

    /// The valid events of `lines` reference-workload lines (retries included: they conflict
    /// and insert nothing), fingerprinted, in batches of 1,000 sorted by key, before any timing.
    /// Properties are stored as `key=value` pairs, each ended by a zero byte: about the size of
    /// the ledger's own encoding.
    static func batches(lines: Int, seed: UInt64) throws -> [[Row]] {
        var workload = try AgentWorkload.workload(seed: seed, lines: lines)
        var rows: [Row] = []
        rows.reserveCapacity(lines)
        var scratch: [UInt8] = []
        while let line = workload.next() {
            guard let event = line.event else { continue }
            var properties: [UInt8] = []
            for property in event.properties {
                properties.append(contentsOf: property.key.utf8)
                properties.append(UInt8(ascii: "="))
                properties.append(contentsOf: property.value.utf8)
                properties.append(0)
            }
            rows.append(
                Row(
                    timestamp: event.timestamp.microseconds, fingerprint: Fingerprint(of: event, scratch: &scratch).bytes, tenant: event.tenant,
                    metric: event.metric, quantity: event.quantity.description, id: event.id, properties: properties))
        }
        return stride(from: 0, to: rows.count, by: 1_000).map { first in
            rows[first..<min(first + 1_000, rows.count)].sorted {
                $0.timestamp != $1.timestamp ? $0.timestamp < $1.timestamp : $0.fingerprint.lexicographicallyPrecedes($1.fingerprint)
            }
        }
    }

    /// Inserts `batches` into `floor_events` of `database` from `clients` connections, batch k on
    /// connection k mod `clients`; returns the time from the first insert to the last commit and
    /// the server's CPU seconds in between (`serverCPU` read before and after, with the
    /// connections' backends still alive).
    static func run(
        server: PostgresTestServer, database: String, batches: [[Row]], clients: Int, serverCPU: () -> Double
    ) async throws -> (elapsed: Duration, cpu: Double) {
        let logger = Logger(label: "tally.bench.floor")
        let configuration = PostgresConnection.Configuration(
            host: server.host, port: server.port, username: "tally", password: server.password, database: database, tls: .disable)
        var connections: [PostgresConnection] = []
        for index in 0..<clients {
            connections.append(try await PostgresConnection.connect(configuration: configuration, id: index, logger: logger))
        }
        let cpuBefore = serverCPU()
        let start = ContinuousClock.now
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (index, connection) in connections.enumerated() {
                    group.addTask {
                        for (number, batch) in batches.enumerated() where number % clients == index {
                            try await insert(batch, sequence: Int64(number), on: connection, logger: logger)
                        }
                    }
                }
                try await group.waitForAll()
            }
        } catch {
            for connection in connections { try? await connection.close() }
            throw error
        }
        let elapsed = ContinuousClock.now - start
        let cpu = serverCPU() - cpuBefore
        for connection in connections { try? await connection.close() }
        return (elapsed, cpu)
    }

    private static func insert(_ batch: [Row], sequence: Int64, on connection: PostgresConnection, logger: Logger) async throws {
        let received = EventTime.now().microseconds
        let times = batch.map(\.timestamp)
        let prints = batch.map { ByteBuffer(bytes: $0.fingerprint) }
        let tenants = batch.map(\.tenant)
        let metrics = batch.map(\.metric)
        let quantities = batch.map(\.quantity)
        let ids = batch.map { $0.id ?? "" }
        let properties = batch.map { ByteBuffer(bytes: $0.properties) }
        let indexes = (0..<batch.count).map { Int32($0) }
        try await connection.query(
            """
            INSERT INTO floor_events (ts, fingerprint, tenant, metric, quantity, event_id, properties, status, billed_in,
                agent, batch_seq, batch_index, received_at)
            SELECT r.ts, r.fp, r.tenant, r.metric, r.quantity, NULLIF(r.id, ''), r.properties, 'accepted', NULL,
                'floor', \(sequence), r.i, \(received)
            FROM unnest(\(times)::bigint[], \(prints)::bytea[], \(tenants)::text[], \(metrics)::text[], \(quantities)::text[],
                \(ids)::text[], \(properties)::bytea[], \(indexes)::integer[]) AS r(ts, fp, tenant, metric, quantity, id, properties, i)
            ON CONFLICT (ts, fingerprint) DO NOTHING
            """, logger: logger)
    }
}
