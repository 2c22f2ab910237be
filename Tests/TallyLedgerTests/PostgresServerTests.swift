import Foundation
import TallyTestSupport
import Testing

/// The shared PostgreSQL test server (TallyTestSupport) itself: one server, fresh databases that
/// answer queries over the password-protected URL, and a server that never runs as root.
@Suite struct PostgresServerTests {
    @Test func sharedServerGivesFreshDatabasesAndRunsUnprivileged() throws {
        guard let server = try PostgresTestServer.shared() else { return }
        #expect(try PostgresTestServer.shared() === server)

        let url = try server.createDatabase("Smoke")
        let name = try #require(PostgresTestServer.databaseName(in: url))
        defer { server.dropDatabase(name) }
        #expect(name.hasPrefix("smoke_"))
        #expect(url == "postgres://tally:\(server.password)@127.0.0.1:\(server.port)/\(name)?sslmode=disable")
        let sum = try server.psql(
            "CREATE TABLE t(x int); INSERT INTO t VALUES (1), (2), (39); SELECT sum(x) FROM t", database: name)
        #expect(sum == "42")

        // Another database starts empty.
        let otherURL = try server.createDatabase("Smoke")
        let other = try #require(PostgresTestServer.databaseName(in: otherURL))
        defer { server.dropDatabase(other) }
        #expect(other != name)
        #expect(try server.psql("SELECT count(*) FROM pg_tables WHERE tablename = 't'", database: other) == "0")
        #expect(throws: PostgresTestServerError.self) { try server.psql("SELECT * FROM t", database: other) }

        // initdb and postgres refuse root: under root the server runs as nobody.
        let status = try String(contentsOfFile: "/proc/\(server.pid)/status", encoding: .utf8)
        let uidLine = status.split(separator: "\n").first { $0.hasPrefix("Uid:") }
        let uids = uidLine?.split(whereSeparator: \.isWhitespace).dropFirst()
        let expected = geteuid() == 0 ? "65534" : String(geteuid())
        #expect(uids.map(Array.init) == [Substring](repeating: Substring(expected), count: 4))
    }
}
