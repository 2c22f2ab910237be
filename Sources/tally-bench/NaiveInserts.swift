import Foundation
import Logging
import NIOCore
import PostgresNIO
import TallyCore
import TallyTestSupport
import TallyWorkload

/// The naive way to make ingest idempotent on PostgreSQL, the baseline of `tally-bench cluster`:
/// one `INSERT … ON CONFLICT DO NOTHING` per event, autocommit (one transaction, so one WAL
/// flush, per event), from several concurrent connections, into a table keyed by (event time,
/// fingerprint) as Tally's ledger is.
enum NaiveInserts {
    /// One event as the naive table stores it; the quantity is its exact decimal text.
    struct Row: Sendable {
        var timestamp: Int64
        var fingerprint: [UInt8]
        var tenant: String
        var metric: String
        var quantity: String
    }

    static let createTable =
        "CREATE TABLE naive (ts bigint, fingerprint bytea, tenant text, metric text, quantity text, PRIMARY KEY (ts, fingerprint))"

    /// The valid events among `lines` lines of the reference workload (retries included: they
    /// conflict and insert nothing, as a client retry would), fingerprinted before any timing.
    static func rows(lines: Int, seed: UInt64) throws -> [Row] {
        var workload = try AgentWorkload.workload(seed: seed, lines: lines)
        var rows: [Row] = []
        rows.reserveCapacity(lines)
        var scratch: [UInt8] = []
        while let line = workload.next() {
            guard let event = line.event else { continue }
            rows.append(
                Row(
                    timestamp: event.timestamp.microseconds, fingerprint: Fingerprint(of: event, scratch: &scratch).bytes,
                    tenant: event.tenant, metric: event.metric, quantity: event.quantity.description))
        }
        return rows
    }

    /// Inserts `rows` into the `naive` table of `database` from `clients` connections, row k on
    /// connection k mod `clients`, each waiting for its insert's commit before the next; returns
    /// the time from the first insert to the last commit (the connections are opened before).
    static func run(server: PostgresTestServer, database: String, rows: [Row], clients: Int) async throws -> Duration {
        let logger = Logger(label: "tally.bench.naive")
        let configuration = PostgresConnection.Configuration(
            host: server.host, port: server.port, username: "tally", password: server.password, database: database, tls: .disable)
        var connections: [PostgresConnection] = []
        for index in 0..<clients {
            connections.append(try await PostgresConnection.connect(configuration: configuration, id: index, logger: logger))
        }
        let start = ContinuousClock.now
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (index, connection) in connections.enumerated() {
                    group.addTask {
                        for row in stride(from: index, to: rows.count, by: clients).lazy.map({ rows[$0] }) {
                            try await connection.query(
                                """
                                INSERT INTO naive (ts, fingerprint, tenant, metric, quantity)
                                VALUES (\(row.timestamp), \(ByteBuffer(bytes: row.fingerprint)), \(row.tenant), \(row.metric), \(row.quantity))
                                ON CONFLICT DO NOTHING
                                """, logger: logger)
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
        for connection in connections { try? await connection.close() }
        return elapsed
    }
}
