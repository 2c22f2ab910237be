import Foundation
import Logging
import NIOCore
import Synchronization
import NIOPosix
import NIOSSL
import PostgresNIO
import TallyCore

/// One PostgreSQL connection used synchronously from the ledger's own thread.
///
/// `LedgerStore` calls block, and the collector runs each store on a dedicated thread (its
/// `Ledger`), never on an event loop or the cooperative pool, so blocking on postgres-nio's
/// futures here is safe and keeps the store protocol the same for both backends — the SQLite
/// path stays as fast as it was. Queries use the extended protocol, unnamed, except the few a
/// batch always sends, which are named and prepared once per connection
/// (``query(prepared:_:_:)``); `prepared_statements=off` in the address sends those unnamed too,
/// for a transaction-pooling PgBouncer before 1.21 (since 1.21, `max_prepared_statements` lets
/// it carry named statements).
///
/// A lost connection (the server restarted, a failover, a network cut) fails the call in hand
/// with ``LedgerError/database(code:message:context:)`` — the collector stops acking and says
/// it is not ready — and the next call reconnects, no more often than a backoff allows (1 s
/// doubling to 30 s). Each change of state (lost, back) is logged once per process, however many
/// of its connections meet it (``PostgresReachability``).
final class PostgresSession {
    let address: PostgresAddress
    private let password: String?
    private let logger: Logger
    private var connection: PostgresConnection?
    private var nextAttempt = ContinuousClock.now
    private var backoff: Duration = .zero
    /// Shared by every session of this process on the same database.
    private let reachability: PostgresReachability
    /// The named statements prepared on this connection (``query(prepared:_:_:)``).
    private var prepared: [String: PreparedQuery] = [:]
    /// Between BEGIN and COMMIT/ROLLBACK of ``transaction(_:isolation:_:)``.
    private(set) var inTransaction = false
    /// A transaction of ``deferredTransaction(_:isolation:onBegin:_:)`` not begun yet: the next
    /// statement (unless it asks for autocommit) sends its BEGIN first, then `onBegin`.
    private var deferredBegin: (isolation: String, onBegin: () throws(LedgerError) -> Void)?
    private static let connectionIDs = ManagedAtomicCounter()

    init(address: PostgresAddress, logger: Logger) throws(LedgerError) {
        self.address = address
        self.logger = logger
        reachability = PostgresReachability.shared(for: address)
        password = try address.resolvedPassword(
            environment: ProcessInfo.processInfo.environment,
            readFile: { path in try String(contentsOfFile: path, encoding: .utf8) })
        try connect()
    }

    deinit { close() }

    func close() {
        guard let connection else { return }
        self.connection = nil
        try? connection.close().wait()
    }

    private func connect() throws(LedgerError) {
        prepared.removeAll()
        var configuration = PostgresConnection.Configuration(
            host: address.host, port: address.port, username: address.user, password: password, database: address.database,
            tls: try tls())
        configuration.options.connectTimeout = TimeAmount.nanoseconds(Int64(address.connectTimeout.components.seconds) * 1_000_000_000)
        do {
            connection = try PostgresConnection.connect(
                on: MultiThreadedEventLoopGroup.singleton.next(), configuration: configuration,
                id: Self.connectionIDs.next(), logger: logger
            ).wait()
        } catch {
            throw Self.ledgerError(error, context: "connecting to \(address)")
        }
    }

    private func tls() throws(LedgerError) -> PostgresConnection.Configuration.TLS {
        switch address.tls {
        case .disable: return .disable
        case .require, .verifyFull:
            var tls = TLSConfiguration.makeClientConfiguration()
            if address.tls == .require { tls.certificateVerification = .none }
            if let root = address.rootCertificate { tls.trustRoots = .file(root) }
            do {
                return .require(try NIOSSLContext(configuration: tls))
            } catch {
                throw .invalidConfiguration("the store's TLS settings (\(address)): \(error)")
            }
        }
    }

    /// The live connection, reconnecting when it was lost and the backoff allows.
    private func live(_ context: String) throws(LedgerError) -> PostgresConnection {
        if let connection, !connection.isClosed { return connection }
        connection = nil
        let now = ContinuousClock.now
        guard now >= nextAttempt else {
            throw .database(
                code: -1, message: "PostgreSQL at \(address.host):\(address.port) is unreachable; retrying in \(nextAttempt - now)",
                context: context)
        }
        do {
            try connect()
        } catch {
            backoff = min(max(backoff * 2, .seconds(1)), .seconds(30))
            nextAttempt = now + backoff
            if reachability.lost() {
                logger.error(
                    "the ledger database is unreachable; not acking until it is back", metadata: ["store": "\(address)", "error": "\(error)"])
            }
            throw error
        }
        if reachability.back() {
            logger.notice("the ledger database is reachable again", metadata: ["store": "\(address)"])
        }
        backoff = .zero
        guard let connection else { throw .database(code: -1, message: "no connection", context: context) }
        return connection
    }

    /// Runs `query` and returns every row. `autocommit`: never the statement that begins a
    /// deferred transaction (it runs on its own, in its own snapshot).
    @discardableResult
    func query(_ query: PostgresQuery, _ context: String, autocommit: Bool = false) throws(LedgerError) -> [PostgresRow] {
        try run(context, autocommit: autocommit) { connection in Array(try connection.query(query, logger: logger).wait().rows) }
    }

    /// Runs a statement that the session prepares on its connection the first time (a named
    /// statement: parsed, analysed and, after PostgreSQL's first few custom plans, planned once
    /// per connection instead of at every call), with `binds` ($1, $2, … in `statement.sql`);
    /// returns each row's cells. For the statements every batch sends; the address's
    /// `prepared_statements=off` sends them unnamed, as every other statement is, for a pooler
    /// that cannot carry named statements.
    ///
    /// Through postgres-nio's future-based prepared queries (its other prepared statements are
    /// async only, and a store call blocks on its own thread). Those ask for binary rows, as
    /// every extended query does, but label the cells with the format the statement's
    /// description gave, text (postgres-nio 1.33): the cells are relabelled binary here.
    @discardableResult
    func query(prepared statement: PreparedStatement, _ binds: [PostgresData], _ context: String) throws(LedgerError) -> [[PostgresCell]] {
        let rows: [PostgresRow]
        if address.preparedStatements {
            rows = try run(context) { connection in
                let ready: PreparedQuery
                if let known = prepared[statement.name] {
                    ready = known
                } else {
                    ready = try connection.prepare(query: statement.sql).wait()
                    prepared[statement.name] = ready
                }
                return try ready.execute(binds).wait()
            }
        } else {
            var unnamed = PostgresQuery(unsafeSQL: statement.sql)
            for bind in binds { unnamed.binds.append(bind) }
            rows = try query(unnamed, context)
        }
        return rows.map { row in
            row.map { cell in
                PostgresCell(
                    bytes: cell.bytes, dataType: cell.dataType, format: .binary, columnName: cell.columnName, columnIndex: cell.columnIndex)
            }
        }
    }

    /// Runs `query` and returns each row as `copy` makes it, on the connection's event loop as
    /// the rows arrive: for answers of large rows (the aggregate log's), whose cells `copy` takes
    /// into memory of their own.
    ///
    /// ``query(_:_:autocommit:)`` keeps every row until the answer is complete, and each row is a
    /// slice of postgres-nio's receive buffer: while any is alive, the buffer's storage is
    /// shared, so every later read into it (and every compaction after a message) copies the rest
    /// of the buffer into freshly mapped memory. With log rows of a hundred kilobytes, the
    /// kernel's zeroing of those pages was a fifth of a collector's CPU in a cluster drain
    /// (perf). Rows handed over as they arrive are let go before the next read.
    func rows<Row: Sendable>(
        _ query: PostgresQuery, _ context: String, copying copy: @escaping @Sendable (PostgresRow) throws(LedgerError) -> Row
    ) throws(LedgerError) -> [Row] {
        let collected = Mutex<[Row]>([])
        // postgres-nio ends the query with its own "cancelled" error when a row's closure
        // throws: the row's own error is kept here and is the one thrown.
        let refused = Mutex<LedgerError?>(nil)
        do throws(LedgerError) {
            try run(context) { connection in
                _ = try connection.query(query, logger: logger) { row in
                    do throws(LedgerError) {
                        let owned = try copy(row)
                        collected.withLock { $0.append(owned) }
                    } catch {
                        refused.withLock { $0 = $0 ?? error }
                        throw error
                    }
                }.wait()
            }
        } catch {
            throw refused.withLock { $0 } ?? error
        }
        return collected.withLock { rows in
            defer { rows = [] }
            return rows
        }
    }

    /// Sends a deferred transaction's BEGIN first (unless `autocommit`), then runs `body` on the
    /// live connection; a failure is logged once when it lost the connection and comes back as
    /// a ``LedgerError``.
    private func run<T>(_ context: String, autocommit: Bool = false, _ body: (PostgresConnection) throws -> T) throws(LedgerError) -> T {
        if !autocommit, let pending = deferredBegin {
            deferredBegin = nil
            try begin(pending.isolation, context)
            try pending.onBegin()
        }
        let connection = try live(context)
        do {
            return try body(connection)
        } catch {
            let lost = connection.isClosed || Self.endsTheConnection(error)
            if lost && reachability.lost() {
                logger.error("lost the ledger database connection", metadata: ["store": "\(address)", "error": "\(String(reflecting: error))"])
            }
            if lost, self.connection === connection {
                // The next call connects again at once, instead of finding this connection still
                // open until its channel's close is processed (the server's error arrives first).
                try? connection.close().wait()
                self.connection = nil
            }
            throw Self.ledgerError(error, context: context)
        }
    }

    /// Whether `error` says the connection is over: closed by the server or the network, or the
    /// server's "terminating connection" (SQLSTATE class 57P: an administrator or a shutdown
    /// ended the backend) or a connection exception (class 08).
    static func endsTheConnection(_ error: any Error) -> Bool {
        guard let psql = error as? PSQLError else { return false }
        switch psql.code {
        case .serverClosedConnection, .connectionError, .uncleanShutdown, .clientClosedConnection: return true
        default:
            let state = psql.serverInfo?[.sqlState] ?? ""
            return state.hasPrefix("57P") || state.hasPrefix("08")
        }
    }

    /// A statement for ``query(prepared:_:_:)``: its SQL with numbered parameters, and a name
    /// unique in the process.
    struct PreparedStatement: Sendable {
        let name: String
        let sql: String
    }

    /// One bind of ``query(prepared:_:_:)``, in PostgreSQL's binary format.
    static func bind<T: PostgresEncodable>(_ value: T) throws(LedgerError) -> PostgresData {
        var buffer = ByteBuffer()
        do { try value.encode(into: &buffer, context: .default) } catch { throw .invalidConfiguration("a statement's parameter: \(error)") }
        return PostgresData(type: T.psqlType, formatCode: T.psqlFormat, value: buffer)
    }

    /// A bind that may be NULL.
    static func bind<T: PostgresEncodable>(_ value: T?) throws(LedgerError) -> PostgresData {
        guard let value else { return PostgresData(type: T.psqlType, formatCode: T.psqlFormat, value: nil) }
        return try bind(value)
    }

    /// Runs `statement` (``query(prepared:_:_:)``) inside a savepoint, inside the open
    /// transaction: true when it succeeded; false when it violated a unique constraint
    /// (SQLSTATE 23505), with the transaction rolled back to the savepoint and usable again.
    /// Any other failure is thrown, as from `query`.
    func succeedsUnlessUniqueViolation(
        prepared statement: PreparedStatement, _ binds: [PostgresData], _ context: String
    )
        throws(LedgerError) -> Bool
    {
        try execute("SAVEPOINT tally_unique", context)
        do {
            try query(prepared: statement, binds, context)
        } catch {
            guard case .database(_, let message, _) = error, message.hasPrefix(Self.uniqueViolation + " ") else { throw error }
            try execute("ROLLBACK TO SAVEPOINT tally_unique", context)
            return false
        }
        try execute("RELEASE SAVEPOINT tally_unique", context)
        return true
    }

    /// The SQLSTATE of a unique violation, at the start of a ``LedgerError/database(code:message:context:)``
    /// message (``ledgerError(_:context:)``).
    static let uniqueViolation = "23505"

    /// Runs SQL without parameters (one statement).
    func execute(_ sql: String, _ context: String) throws(LedgerError) {
        try query(PostgresQuery(unsafeSQL: sql), context)
    }

    /// Runs `body` in a transaction: committed when it returns, rolled back when it throws.
    func transaction<T>(_ context: String, isolation: String = "", _ body: () throws(LedgerError) -> T) throws(LedgerError) -> T {
        try begin(isolation, context)
        return try finishing(context, body)
    }

    /// Like ``transaction(_:isolation:_:)``, but BEGIN is sent only before the first statement
    /// `body` runs that needs it, followed by `onBegin` (which may check that the snapshot is the
    /// one the body's answers so far assumed, and throw); a body that sends nothing (or only
    /// `autocommit` statements) costs no BEGIN and no COMMIT.
    func deferredTransaction<T>(
        _ context: String, isolation: String, onBegin: @escaping () throws(LedgerError) -> Void, _ body: () throws(LedgerError) -> T
    ) throws(LedgerError) -> T {
        deferredBegin = (isolation, onBegin)
        defer { deferredBegin = nil }
        return try finishing(context, body)
    }

    private func begin(_ isolation: String, _ context: String) throws(LedgerError) {
        try execute(isolation.isEmpty ? "BEGIN" : "BEGIN \(isolation)", context)
        inTransaction = true
    }

    /// Runs `body`; then COMMIT if a transaction began, or ROLLBACK if it began and `body` threw.
    private func finishing<T>(_ context: String, _ body: () throws(LedgerError) -> T) throws(LedgerError) -> T {
        defer { inTransaction = false }
        do throws(LedgerError) {
            let result = try body()
            if inTransaction { try execute("COMMIT", context) }
            return result
        } catch {
            if inTransaction, let connection, !connection.isClosed { _ = try? query("ROLLBACK", context) }
            throw error
        }
    }

    /// Kills this session's connection without committing (for crash tests).
    func abandon() {
        guard let connection else { return }
        self.connection = nil
        try? connection.close().wait()
    }

    /// The server's SQLSTATE leads the message, for ``succeedsUnlessUniqueViolation(prepared:_:_:)``
    /// and for people. postgres-nio reports a server's error as `PSQLError`, except from the
    /// future-based prepared statements (``query(prepared:_:_:)``), which report the older
    /// `PostgresError.server`.
    static func ledgerError(_ error: any Error, context: String) -> LedgerError {
        if let error = error as? LedgerError { return error }
        let state: String
        let message: String
        if let psql = error as? PSQLError {
            state = psql.serverInfo?[.sqlState] ?? ""
            message = psql.serverInfo?[.message] ?? "\(psql.code)"
        } else if let legacy = error as? PostgresError, case .server(let server) = legacy {
            state = server.fields[.sqlState] ?? ""
            message = server.fields[.message] ?? "\(legacy)"
        } else {
            return .database(code: -1, message: "\(error)", context: context)
        }
        if state == "23514", message.contains("tally_sum_range") {
            return .quantityOverflow("an aggregate sum: \(message)")
        }
        return .database(code: -1, message: state.isEmpty ? message : "\(state) \(message)", context: context)
    }
}

/// Connection ids for postgres-nio's logs.
final class ManagedAtomicCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var value = 0
    func next() -> Int {
        lock.lock()
        defer { lock.unlock() }
        value += 1
        return value
    }
}

/// Whether this process has said that a ledger database is unreachable. Shared by every session
/// of the process on that database (the collector's writers and readers each have their own
/// connection), so that an outage is one line in the log when it begins and one when it ends,
/// not one per connection that meets it.
final class PostgresReachability: Sendable {
    private let reportedLost = Mutex(false)
    private static let shared = PerDatabase<PostgresReachability>()

    static func shared(for address: PostgresAddress) -> PostgresReachability {
        shared.object(for: address) { PostgresReachability() }
    }

    /// A session found the database gone: true for the first since it was last reachable, which
    /// says so.
    func lost() -> Bool {
        reportedLost.withLock { reported in
            defer { reported = true }
            return !reported
        }
    }

    /// A session reached the database: true for the first since a loss was said, which says so.
    func back() -> Bool {
        reportedLost.withLock { reported in
            defer { reported = false }
            return reported
        }
    }
}
