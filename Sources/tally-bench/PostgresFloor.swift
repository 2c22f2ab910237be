import Foundation
import Logging
import NIOCore
import PostgresNIO
import TallyCore
import TallyTestSupport

/// The PostgreSQL floor beside the cluster figure in `tally-bench cluster`: only the raw rows
/// Tally stores, and nothing else a batch does. The same columns as the ledger's `raw_events`
/// and its `(ts, fingerprint)` key, 1,000 rows per plain `INSERT` through `unnest`, as Tally
/// inserts a batch whose keys it believes new (one transaction, so one fsync'd WAL flush, per
/// 1,000), rows sorted by key, each key once (the workload's retries left out before the
/// timing), from several connections. No batch record, duplicates, aggregate log, fold or
/// reconciliation, no collector, no agent. What it shows is the server's own cost per stored
/// event on this machine: the cluster's figure cannot pass the floor's rate, and the floor's
/// PostgreSQL CPU per event says how many events per second the cores could store at all.
enum PostgresFloor {
    typealias Row = NaiveInserts.Row

    static let createTable = """
        CREATE TABLE floor_events (ts bigint NOT NULL, fingerprint bytea NOT NULL, tenant text NOT NULL, metric text NOT NULL,
            quantity text NOT NULL, event_id text, properties bytea NOT NULL, status text NOT NULL, billed_in text, agent text NOT NULL,
            batch_seq bigint NOT NULL, batch_index integer NOT NULL, received_at bigint NOT NULL, PRIMARY KEY (ts, fingerprint))
        """

    /// The valid events of `lines` reference-workload lines (``NaiveInserts/rows(lines:seed:)``)
    /// in batches of 1,000 sorted by key, before any timing.
    static func batches(lines: Int, seed: UInt64) throws -> [[Row]] {
        struct Key: Hashable {
            var timestamp: Int64
            var fingerprint: [UInt8]
        }
        var seen = Set<Key>()
        var rows = try NaiveInserts.rows(lines: lines, seed: seed)
        rows.removeAll { !seen.insert(Key(timestamp: $0.timestamp, fingerprint: $0.fingerprint)).inserted }
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
        try await BenchConnections.run(
            server: server, database: database, clients: clients, label: "tally.bench.floor", serverCPU: serverCPU
        ) { index, connection, logger in
            for (number, batch) in batches.enumerated() where number % clients == index {
                try await insert(batch, sequence: Int64(number), on: connection, logger: logger)
            }
        }
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
            """, logger: logger)
    }
}
