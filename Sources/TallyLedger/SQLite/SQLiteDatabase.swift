import CSQLite
import TallyCore

/// One SQLite connection. Not thread-safe: the owning store uses it from one thread.
///
/// Tally talks to the SQLite C API directly rather than through GRDB or another wrapper: at the
/// target of 250,000 events/s a wrapper's per-row costs (row decoding into dictionaries or
/// Codable, statement caches keyed by SQL text, value boxing) are a large share of the ~4 µs per
/// event budget; here each row is a handful of bind calls on statements prepared once.
final class SQLiteDatabase {
    private(set) var handle: OpaquePointer?
    /// Every statement prepared on this connection, by SQL text: prepared once, reused, and
    /// finalized before the connection closes (so closing really closes, and an open
    /// transaction is rolled back at once).
    private var prepared: [String: SQLiteStatement] = [:]

    /// SQLite's process-wide settings, applied once before the first connection opens.
    private static let configured: Int32 = tally_sqlite_configure()

    init(path: String) throws(LedgerError) {
        _ = Self.configured
        var db: OpaquePointer?
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX
        let code = sqlite3_open_v2(path, &db, flags, nil)
        guard code == SQLITE_OK, let db else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            sqlite3_close_v2(db)
            throw .database(code: code, message: message, context: "opening \(path)")
        }
        handle = db
        sqlite3_extended_result_codes(db, 1)
    }

    deinit { close() }

    /// Closes the connection; an open transaction is rolled back by SQLite.
    func close() {
        for statement in prepared.values { statement.finalize() }
        prepared = [:]
        if let handle { sqlite3_close_v2(handle) }
        handle = nil
    }

    func error(_ code: Int32, _ context: String) -> LedgerError {
        let message = handle.map { String(cString: sqlite3_errmsg($0)) } ?? "the connection is closed"
        return .database(code: code, message: message, context: context)
    }

    func execute(_ sql: String) throws(LedgerError) {
        guard let handle else { throw error(SQLITE_MISUSE, "running \(sql)") }
        var message: UnsafeMutablePointer<CChar>?
        let code = sqlite3_exec(handle, sql, nil, nil, &message)
        if code != SQLITE_OK {
            let text = message.map { String(cString: $0) } ?? "error \(code)"
            sqlite3_free(message)
            throw .database(code: code, message: text, context: "running \(sql.prefix(80))")
        }
    }

    /// The prepared statement for `sql`, prepared on first use. Callers reset it when done.
    func prepare(_ sql: String) throws(LedgerError) -> SQLiteStatement {
        if let cached = prepared[sql] { return cached }
        guard let handle else { throw error(SQLITE_MISUSE, "preparing \(sql)") }
        var statement: OpaquePointer?
        let code = sqlite3_prepare_v3(handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &statement, nil)
        guard code == SQLITE_OK, let statement else { throw error(code, "preparing \(sql.prefix(80))") }
        let prepared = SQLiteStatement(statement, database: self, sql: sql)
        self.prepared[sql] = prepared
        return prepared
    }

    /// Rows changed by the last INSERT, UPDATE or DELETE.
    var changes: Int { handle.map { Int(sqlite3_changes($0)) } ?? 0 }

    /// The rowid of the last row inserted on this connection.
    var lastInsertRowID: Int64 { handle.map { sqlite3_last_insert_rowid($0) } ?? 0 }
}

/// A prepared statement, reused: bind, step, reset.
final class SQLiteStatement {
    /// nil once finalized; SQLite treats calls on a NULL statement as harmless misuse.
    private(set) var handle: OpaquePointer?
    unowned let database: SQLiteDatabase
    let sql: String

    init(_ handle: OpaquePointer, database: SQLiteDatabase, sql: String) {
        self.handle = handle
        self.database = database
        self.sql = sql
    }

    deinit { finalize() }

    func finalize() {
        sqlite3_finalize(handle)
        handle = nil
    }

    func bind(_ index: Int32, _ value: Int64) { sqlite3_bind_int64(handle, index, value) }
    func bind(_ index: Int32, _ value: Int) { sqlite3_bind_int64(handle, index, Int64(value)) }
    func bindNull(_ index: Int32) { sqlite3_bind_null(handle, index) }

    func bind(_ index: Int32, _ value: String) {
        var text = value
        text.withUTF8 { bytes in
            // A zero-length buffer may have no address; SQLite would store NULL for it.
            let empty: StaticString = ""
            let base = bytes.baseAddress ?? empty.utf8Start
            sqlite3_bind_text(
                handle, index, UnsafeRawPointer(base).assumingMemoryBound(to: CChar.self), Int32(bytes.count),
                tally_sqlite_transient())
        }
    }

    func bind(_ index: Int32, _ value: String?) {
        if let value { bind(index, value) } else { bindNull(index) }
    }

    func bind(_ index: Int32, blob: [UInt8]) {
        blob.withUnsafeBytes { bytes in
            let empty: StaticString = ""
            let base = bytes.baseAddress ?? UnsafeRawPointer(empty.utf8Start)
            sqlite3_bind_blob(handle, index, base, Int32(bytes.count), tally_sqlite_transient())
        }
    }

    /// Binds the 16 big-endian bytes of a fingerprint without allocating.
    func bind(_ index: Int32, fingerprint: Fingerprint) {
        withUnsafeBytes(of: (fingerprint.high.bigEndian, fingerprint.low.bigEndian)) { bytes in
            _ = sqlite3_bind_blob(handle, index, bytes.baseAddress, 16, tally_sqlite_transient())
        }
    }

    /// Binds `arguments`' text and blobs where they lie, without SQLite's copy of each
    /// (`SQLITE_STATIC`), runs the statement to completion and resets it. The bytes stay pinned
    /// for the whole run, and the reset clears the bindings before the call returns, so SQLite
    /// never holds a pointer into them afterwards. `arguments` is emptied for the next row.
    func run(binding arguments: inout StaticArguments) throws(LedgerError) {
        let result = arguments.bytes.withUnsafeBufferPointer { buffer -> Result<Void, LedgerError> in
            // The buffer starts with a byte of its own, so its address is never nil: SQLite
            // would store NULL for an empty text bound at a nil address.
            guard let base = buffer.baseAddress else { return .failure(database.error(SQLITE_MISUSE, "binding \(sql.prefix(80))")) }
            for value in arguments.values {
                let start = UnsafeRawPointer(base + value.start)
                if value.isBlob {
                    sqlite3_bind_blob(handle, value.index, start, Int32(value.count), nil)
                } else {
                    sqlite3_bind_text(handle, value.index, start.assumingMemoryBound(to: CChar.self), Int32(value.count), nil)
                }
            }
            do throws(LedgerError) {
                try run()
                return .success(())
            } catch {
                reset()  // a failed step resets but keeps the bindings: clear them too
                return .failure(error)
            }
        }
        arguments.removeAll()
        try result.get()
    }

    /// Steps once: true when a row is ready, false when done.
    func step() throws(LedgerError) -> Bool {
        guard handle != nil else { throw database.error(SQLITE_MISUSE, "running \(sql.prefix(80)) on a closed ledger") }
        let code = sqlite3_step(handle)
        switch code {
        case SQLITE_ROW: return true
        case SQLITE_DONE: return false
        default:
            let error = database.error(code, "running \(sql.prefix(80))")
            sqlite3_reset(handle)
            throw error
        }
    }

    /// Steps to completion, then resets.
    func run() throws(LedgerError) {
        while try step() {}
        reset()
    }

    func reset() {
        sqlite3_reset(handle)
        sqlite3_clear_bindings(handle)
    }

    func isNull(_ column: Int32) -> Bool { sqlite3_column_type(handle, column) == SQLITE_NULL }
    func int64(_ column: Int32) -> Int64 { sqlite3_column_int64(handle, column) }

    func text(_ column: Int32) -> String {
        guard let pointer = sqlite3_column_text(handle, column) else { return "" }
        let count = Int(sqlite3_column_bytes(handle, column))
        return String(decoding: UnsafeBufferPointer(start: pointer, count: count), as: UTF8.self)
    }

    func optionalText(_ column: Int32) -> String? { isNull(column) ? nil : text(column) }

    func blob(_ column: Int32) -> [UInt8] {
        guard let pointer = sqlite3_column_blob(handle, column) else { return [] }
        let count = Int(sqlite3_column_bytes(handle, column))
        return Array(UnsafeRawBufferPointer(start: pointer, count: count))
    }

    /// The blob in `column` without copying it, valid only inside `body` (SQLite owns the bytes
    /// until the statement steps or resets).
    func withBlob<T>(_ column: Int32, _ body: (UnsafeRawBufferPointer) throws(LedgerError) -> T) throws(LedgerError) -> T {
        // The pointer first, then the size (SQLite's documented order); NULL for an empty blob.
        guard let pointer = sqlite3_column_blob(handle, column) else { return try body(UnsafeRawBufferPointer(start: nil, count: 0)) }
        return try body(UnsafeRawBufferPointer(start: pointer, count: Int(sqlite3_column_bytes(handle, column))))
    }
}

/// The text and blob arguments of one statement execution, gathered in one reusable buffer and
/// bound in place (``SQLiteStatement/run(binding:)``): for the raw-event insert, which binds six
/// of them per event, SQLite's copy of each bound value (an allocation, a copy and a free) was
/// work the writer thread did for nothing.
struct StaticArguments {
    struct Value {
        var index: Int32
        var start: Int
        var count: Int
        var isBlob: Bool
    }

    private(set) var bytes: [UInt8] = [0]
    private(set) var values: [Value] = []

    mutating func text(_ index: Int32, _ text: String) {
        let start = bytes.count
        bytes.append(contentsOf: text.utf8)
        values.append(Value(index: index, start: start, count: bytes.count - start, isBlob: false))
    }

    mutating func blob(_ index: Int32, _ blob: some Collection<UInt8>) {
        let start = bytes.count
        bytes.append(contentsOf: blob)
        values.append(Value(index: index, start: start, count: blob.count, isBlob: true))
    }

    mutating func removeAll() {
        bytes.removeSubrange(1...)
        values.removeAll(keepingCapacity: true)
    }
}
