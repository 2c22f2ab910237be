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
    /// One event of the reference workload, fingerprinted. The naive table stores the first
    /// five fields; the floor (``PostgresFloor``) stores all of them.
    struct Row: Sendable {
        var timestamp: Int64
        var fingerprint: [UInt8]
        var tenant: String
        var metric: String
        /// The exact decimal text.
        var quantity: String
        var id: String?
        /// `key=value` pairs, each ended by a zero byte: about the size of the ledger's own
        /// encoding.
        var properties: [UInt8]
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
        return rows
    }

    /// Inserts `rows` into the `naive` table of `database` from `clients` connections, row k on
    /// connection k mod `clients`, each waiting for its insert's commit before the next; returns
    /// the time from the first insert to the last commit (the connections are opened before).
    static func run(server: PostgresTestServer, database: String, rows: [Row], clients: Int) async throws -> Duration {
        try await BenchConnections.run(server: server, database: database, clients: clients, label: "tally.bench.naive") {
            index, connection, logger in
            for row in stride(from: index, to: rows.count, by: clients).lazy.map({ rows[$0] }) {
                try await connection.query(
                    """
                    INSERT INTO naive (ts, fingerprint, tenant, metric, quantity)
                    VALUES (\(row.timestamp), \(ByteBuffer(bytes: row.fingerprint)), \(row.tenant), \(row.metric), \(row.quantity))
                    ON CONFLICT DO NOTHING
                    """, logger: logger)
            }
        }.elapsed
    }
}

/// Connections to the bench's PostgreSQL, each running its share of a baseline at once.
enum BenchConnections {
    /// Opens `clients` connections to `database`, then runs `body` on each at once (with its
    /// index); returns the time from the start to the last body's end, and the server's CPU
    /// seconds in between (`serverCPU` read before and after, while the connections' backends
    /// are still alive; 0 without it). The connections are closed either way.
    static func run(
        server: PostgresTestServer, database: String, clients: Int, label: String, serverCPU: () -> Double = { 0 },
        body: @escaping @Sendable (Int, PostgresConnection, Logger) async throws -> Void
    ) async throws -> (elapsed: Duration, cpu: Double) {
        let logger = Logger(label: label)
        let configuration = PostgresConnection.Configuration(
            host: server.host, port: server.port, username: "tally", password: server.password, database: database, tls: .disable)
        var connections: [PostgresConnection] = []
        let measured: Result<(elapsed: Duration, cpu: Double), any Error>
        do {
            for index in 0..<clients {
                connections.append(try await PostgresConnection.connect(configuration: configuration, id: index, logger: logger))
            }
            let cpuBefore = serverCPU()
            let start = ContinuousClock.now
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (index, connection) in connections.enumerated() {
                    group.addTask { try await body(index, connection, logger) }
                }
                try await group.waitForAll()
            }
            measured = .success((ContinuousClock.now - start, serverCPU() - cpuBefore))
        } catch {
            measured = .failure(error)
        }
        for connection in connections { try? await connection.close() }
        return try measured.get()
    }
}
