import Foundation
import Testing

@testable import TallyLedger

/// Text and blobs bound in place (`StaticArguments`, `SQLITE_STATIC`) store exactly what was
/// bound, row after row through one reused buffer: empty values stay empty (not NULL), and a
/// failed step leaves no binding behind.
@Suite struct StaticArgumentsTests {
    /// A fresh database file, removed afterwards.
    func withDatabase(_ body: (SQLiteDatabase) throws -> Void) throws {
        let factory = SQLiteFactory()
        let location = try factory.newLocation()
        defer { factory.destroy(location) }
        let database = try SQLiteDatabase(path: location)
        defer { database.close() }
        try body(database)
    }

    @Test func valuesBoundInPlaceAreStoredExactly() throws {
        try withDatabase { database in
            try database.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT NOT NULL, b BLOB NOT NULL, c TEXT)")
            let insert = try database.prepare("INSERT INTO t (id, a, b, c) VALUES (?1, ?2, ?3, ?4)")
            var arguments = StaticArguments()
            var expected: [(String, [UInt8], String?)] = []
            for row in 0..<300 {
                // Lengths that grow and shrink, so later rows reuse (and outgrow) the buffer.
                let a = row % 7 == 0 ? "" : String(repeating: "é\(row)", count: (row * 13) % 40)
                let b = (0..<((row * 29) % 90)).map { UInt8(truncatingIfNeeded: $0 &* row) }
                let c: String? = row % 3 == 0 ? nil : "c-\(row)"
                insert.bind(1, row)
                arguments.text(2, a)
                arguments.blob(3, b)
                if let c { arguments.text(4, c) } else { insert.bindNull(4) }
                try insert.run(binding: &arguments)
                expected.append((a, b, c))
            }
            let select = try database.prepare("SELECT a, b, c, typeof(a), typeof(b) FROM t ORDER BY id")
            defer { select.reset() }
            var row = 0
            while try select.step() {
                #expect(select.text(0) == expected[row].0, "row \(row)")
                #expect(select.blob(1) == expected[row].1, "row \(row)")
                #expect(select.optionalText(2) == expected[row].2, "row \(row)")
                #expect(select.text(3) == "text" && select.text(4) == "blob", "row \(row): empty values must not be NULL")
                row += 1
            }
            #expect(row == 300)
        }
    }

    @Test func aFailedRunLeavesNoBindingBehind() throws {
        try withDatabase { database in
            try database.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT)")
            let insert = try database.prepare("INSERT INTO t (id, a) VALUES (?1, ?2)")
            var arguments = StaticArguments()
            insert.bind(1, 1)
            arguments.text(2, "first")
            try insert.run(binding: &arguments)
            insert.bind(1, 1)  // the same key: the step fails
            arguments.text(2, "second")
            #expect(throws: LedgerError.self) { try insert.run(binding: &arguments) }
            // Run again binding only the key: the text parameter was cleared, so it is NULL.
            insert.bind(1, 2)
            try insert.run()
            let select = try database.prepare("SELECT a IS NULL FROM t WHERE id = 2")
            defer { select.reset() }
            #expect(try select.step() && select.int64(0) == 1)
        }
    }
}
