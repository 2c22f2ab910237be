import Foundation
import Logging
import MetricsTestKit
import NIOCore
import PostgresNIO
import Synchronization
import TallyCore
@testable import TallyLedger
import TallyTestSupport
import Testing

/// What only the PostgreSQL backend has: migrations shared by collectors that start together,
/// monthly raw partitions that can be detached, and a refusal of a newer schema.
@Suite struct PostgresBackendTests {
    @Test func collectorsStartingTogetherMigrateOnce() throws {
        guard let server = try PostgresTestServer.shared() else { return }
        let url = try server.createDatabase("migrate")
        let name = try #require(PostgresTestServer.databaseName(in: url))
        defer { server.dropDatabase(name) }
        let address = try PostgresAddress(parsing: url)
        let failures = Mutex<[String]>([])
        // Six "collectors" open the same fresh database at once, each on its own thread.
        DispatchQueue.concurrentPerform(iterations: 6) { _ in
            do {
                let store = try PostgresLedgerStore(address: address, configuration: TestLedger.configuration)
                store.close()
            } catch {
                failures.withLock { $0.append("\(error)") }
            }
        }
        #expect(failures.withLock { $0 }.isEmpty, "\(failures.withLock { $0 })")
        #expect(try server.psql("SELECT count(*) FROM tally_schema_migrations", database: name) == "\(PostgresSchema.migrations.count)")
        let store = try PostgresLedgerStore(address: address, configuration: TestLedger.configuration)
        defer { store.close() }
        #expect(try store.commit(batch(1, [event(id: "a")])).accepted == 1)
    }

    @Test func aDatabaseFromANewerTallyIsRefused() throws {
        guard let server = try PostgresTestServer.shared() else { return }
        let url = try server.createDatabase("newer")
        let name = try #require(PostgresTestServer.databaseName(in: url))
        defer { server.dropDatabase(name) }
        try PostgresLedgerStore(address: PostgresAddress(parsing: url), configuration: TestLedger.configuration).close()
        _ = try server.psql("INSERT INTO tally_schema_migrations (version) VALUES (99)", database: name)
        let error = #expect(throws: LedgerError.self) {
            try PostgresLedgerStore(address: PostgresAddress(parsing: url), configuration: TestLedger.configuration)
        }
        #expect(error.map { "\($0)".contains("schema version 99, newer than this Tally knows") } == true, "\(String(describing: error))")
    }

    /// The statements every batch sends are prepared once per connection (the default) or sent
    /// unnamed (`prepared_statements=off`, for poolers that cannot carry named statements): two
    /// collectors, one of each, store and dedupe alike; a collector whose connection the server
    /// ended prepares them again on the next one.
    @Test func preparedAndUnnamedStatementsStoreAlikeAndSurviveAReconnect() throws {
        guard let server = try PostgresTestServer.shared() else { return }
        let url = try server.createDatabase("prepared")
        let name = try #require(PostgresTestServer.databaseName(in: url))
        defer { server.dropDatabase(name) }
        let prepared = try PostgresLedgerStore(address: PostgresAddress(parsing: url), configuration: TestLedger.configuration)
        defer { prepared.close() }
        #expect(prepared.address.preparedStatements)
        let unnamed = try PostgresLedgerStore(
            address: PostgresAddress(parsing: url + (url.contains("?") ? "&" : "?") + "prepared_statements=off"),
            configuration: TestLedger.configuration)
        defer { unnamed.close() }
        #expect(!unnamed.address.preparedStatements)
        let first = (0..<5).map { event(id: "a\($0)") }
        #expect(try prepared.commit(batch(1, agent: "one", first)).accepted == 5)
        // The same events again, three new ones among them, from the other collector and then
        // this one: the answer names exactly the stored ones.
        let again = first + (0..<3).map { event(id: "b\($0)") }
        let other = try unnamed.commit(batch(1, agent: "two", again))
        #expect(other.accepted == 3 && other.duplicate == 5)
        let more = again + [event(id: "c0")]
        let mine = try prepared.commit(batch(2, agent: "one", more))
        #expect(mine.accepted == 1 && mine.duplicate == 8)
        // The server ends every connection of the database: the statement prepared on the old
        // one is gone with it.
        _ = try server.psql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '\(name)' AND pid <> pg_backend_pid()",
            database: name)
        // The first commit may find the connection gone (the lost connection is reported as a
        // database error); the next connects again.
        let last = batch(3, agent: "one", [event(id: "d0"), event(id: "c0")])
        let outcome = try (try? prepared.commit(last)) ?? prepared.commit(last)
        #expect(outcome.accepted == 1 && outcome.duplicate == 1)
        #expect(try server.psql("SELECT count(*) FROM raw_events", database: name) == "10")
    }

    /// An outage is said once per process, not once per connection: three sessions on a database
    /// that ends their connections and refuses new ones log one line when it goes (whichever of
    /// "lost" and "unreachable" comes first) and one when it is back.
    @Test func anOutageIsLoggedOncePerProcessNotOncePerConnection() throws {
        guard let server = try PostgresTestServer.shared() else { return }
        let url = try server.createDatabase("outage")
        let name = try #require(PostgresTestServer.databaseName(in: url))
        defer { server.dropDatabase(name) }
        let lines = LogLines()
        let address = try PostgresAddress(parsing: url)
        let sessions = try (0..<3).map { _ in try PostgresSession(address: address, logger: lines.logger()) }
        defer { for session in sessions { session.close() } }
        let probe = PostgresQuery(unsafeSQL: "SELECT 1")
        for session in sessions { try session.query(probe, "before") }

        _ = try server.psql(
            "ALTER DATABASE \(name) ALLOW_CONNECTIONS false; SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '\(name)'",
            database: "postgres")
        for session in sessions {
            #expect(throws: LedgerError.self, "a session finds the database gone") { try session.query(probe, "during") }
        }
        _ = try server.psql("ALTER DATABASE \(name) ALLOW_CONNECTIONS true", database: "postgres")
        // Each session connects again once its backoff (1 s) allows: polled, with a deadline.
        let deadline = ContinuousClock.now + .seconds(60)
        for session in sessions {
            while (try? session.query(probe, "after")) == nil {
                try #require(ContinuousClock.now < deadline, "a session did not reconnect")
                Thread.sleep(forTimeInterval: 0.05)
            }
        }
        let gone = lines.count("lost the ledger database connection") + lines.count("the ledger database is unreachable; not acking until it is back")
        #expect(gone == 1, "\(lines.all)")
        #expect(lines.count("the ledger database is reachable again") == 1, "\(lines.all)")
    }

    /// Raw events live in monthly partitions; an old month can be detached (to archive it) while
    /// the ledger keeps taking and billing events of the live months.
    @Test func anOldMonthIsDetachedWithoutTouchingLiveOnes() throws {
        guard let server = try PostgresTestServer.shared() else { return }
        let url = try server.createDatabase("partitions")
        let name = try #require(PostgresTestServer.databaseName(in: url))
        defer { server.dropDatabase(name) }
        var configuration = TestLedger.configuration
        configuration.lateWindow.lateArrivalLimit = .seconds(90 * 86_400)
        configuration.dedupeHorizon = .seconds(90 * 86_400)
        let store = try PostgresLedgerStore(address: PostgresAddress(parsing: url), configuration: configuration)
        defer { store.close() }
        _ = try store.commit(
            batch(1, now: "2026-04-10T00:00:00Z", [event(at: "2026-02-10T00:00:00Z", id: "feb"), event(at: "2026-04-09T00:00:00Z", id: "apr")]))
        let partitions = try server.psql(
            "SELECT string_agg(c.relname, ',' ORDER BY c.relname) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'raw_events'::regclass",
            database: name)
        #expect(partitions.contains("raw_events_2026_02") && partitions.contains("raw_events_2026_04"), "\(partitions)")
        #expect(try server.psql("SELECT count(*) FROM raw_events_2026_02", database: name) == "1")

        _ = try server.psql("ALTER TABLE raw_events DETACH PARTITION raw_events_2026_02", database: name)
        #expect(try store.commit(batch(2, now: "2026-04-10T00:00:00Z", [event(at: "2026-04-09T01:00:00Z", id: "apr-2")])).accepted == 1)
        let april = try store.periodTotals(tenant: "acme", metric: "api_calls", period: period("2026-04"))
        #expect(april.usage?.count == 2)
        // Aggregates and invoices do not read raw events: the (late) February event is still billed.
        #expect(april.adjustments.map(\.original) == [period("2026-02")] && april.adjustments.first?.aggregate.count == 1)
        var scanned = 0
        try store.scanRawEvents(tenant: "acme", period: period("2026-02")) { _ in scanned += 1 }
        #expect(scanned == 0, "the detached month is out of the live ledger")
        #expect(try server.psql("SELECT count(*) FROM raw_events_2026_02", database: name) == "1", "and kept for the archive")
    }

    /// A reader keeps aggregate answers between folds (one question instead of a round trip per
    /// metric), and still sees every batch committed before its read — by itself or by another
    /// collector, folded by either.
    @Test func cachedReadsStayExactAcrossCollectors() throws {
        try withTwoCollectors("readcache") { server, name, a, b in
            let april = period("2026-04")
            func reading(_ store: PostgresLedgerStore) throws -> (calls: Int64?, users: Int) {
                try read(store) { () throws(LedgerError) in
                    let totals = try store.periodTotals(tenant: "acme", metric: "api_calls", period: april)
                    let users = try store.uniqueCount(tenant: "acme", metric: "active_users", property: "user", period: april)
                    return (totals.usage?.count, users.usage)
                }
            }
            func user(_ id: String) -> UsageEvent { event("acme", "active_users", at: "2026-04-13T12:00:00Z", id: id, [("user", id)]) }

            _ = try a.commit(batch(1, [event(id: "1"), event(id: "2"), user("u1")]))
            #expect(try reading(a) == (2, 1))
            let hits = a.readCache.hits
            #expect(try reading(a) == (2, 1))
            // Nothing changed: the usage cells, the adjustments and the unique count come from the cache.
            #expect(a.readCache.hits == hits + 3)

            // Another collector commits; its batch is in the log, so the reader folds and reads anew.
            _ = try b.commit(batch(1, agent: "agent-2", [event(id: "3"), user("u2")]))
            #expect(try reading(a) == (3, 2))
            // Another collector commits and folds it itself: the log is empty again, but the fold
            // generation moved on.
            _ = try b.commit(batch(2, agent: "agent-2", [event(id: "4"), user("u3")]))
            #expect(try reading(b) == (4, 3))
            #expect(try server.psql("SELECT count(*) FROM aggregate_log", database: name) == "0")
            #expect(try reading(a) == (4, 3))
            let afterFold = a.readCache.hits
            #expect(try reading(a) == (4, 3))
            #expect(a.readCache.hits == afterFold + 3)
        }
    }
}

extension PostgresBackendTests {
    /// A merging reader keeps the aggregate tables' answers for a fold generation even while the
    /// log has rows (only a fold changes the tables), merges the log on top, and reads unique
    /// values (written by commits) afresh: every answer counts every batch.
    @Test func aMergingReaderCachesTheTablesButNotTheLog() throws {
        try withTwoCollectors("mergecache") { _, _, a, b in
            let april = period("2026-04")
            #expect(b.mergeUnfoldedLogOnRead())
            func user(_ id: String) -> UsageEvent { event("acme", "active_users", at: "2026-04-13T12:00:00Z", id: id, [("user", id)]) }
            func reading() throws -> (calls: Int64?, users: Int) {
                try b.withSnapshot { () throws(LedgerError) in
                    let totals = try b.periodTotals(tenant: "acme", metric: "api_calls", period: april)
                    let users = try b.uniqueCount(tenant: "acme", metric: "active_users", property: "user", period: april)
                    return (totals.usage?.count, users.usage)
                }
            }
            _ = try a.commit(batch(1, [event(id: "1"), event(id: "2"), user("u1")]))
            try a.foldAggregates()
            _ = try a.commit(batch(2, [event(id: "3"), user("u2")]))
            #expect(try reading() == (3, 2))
            let hits = b.readCache.hits
            // A new batch in the log, no fold: the tables' two answers (usage, adjustments) come
            // from the cache, the batch from the log, the unique count from the database.
            _ = try a.commit(batch(3, [event(id: "4"), user("u3")]))
            #expect(try reading() == (4, 3))
            #expect(b.readCache.hits == hits + 2)
            // A fold moves the generation: nothing cached before it is used.
            try a.foldAggregates()
            let beforeFold = b.readCache.hits
            _ = try a.commit(batch(4, [event(id: "5")]))
            #expect(try reading() == (5, 3))
            #expect(b.readCache.hits == beforeFold)
            // Folded with nothing after it: the listing finds the log empty, and the next read
            // (back to the one-statement check) answers everything from the cache.
            try a.foldAggregates()
            #expect(try reading() == (5, 3))
            let emptied = b.readCache.hits
            #expect(try reading() == (5, 3))
            #expect(b.readCache.hits == emptied + 3)
        }
    }

    /// A read whose snapshot begins only on a cache miss: when another collector commits and
    /// folds between the read's log check and that miss, the read starts over in a fresh
    /// snapshot instead of mixing answers from two states of the ledger.
    @Test func aReadWhoseLedgerMovesStartsOver() throws {
        try withTwoCollectors("moved") { _, _, a, b in
            let april = period("2026-04")
            _ = try a.commit(batch(1, [event(id: "1")]))
            // The usage answer is cached at this generation; the unique count is not.
            #expect(
                try read(a) { () throws(LedgerError) in try a.periodTotals(tenant: "acme", metric: "api_calls", period: april).usage?.count } == 1)
            var runs = 0
            let answer = try a.withSnapshot { () throws(LedgerError) -> (Int64?, Int) in
                runs += 1
                #expect(try !a.hasUnfoldedAggregates())
                if runs == 1 {
                    // Between the check and the first read that needs the database, another
                    // collector commits a batch and folds it.
                    do {
                        _ = try b.commit(batch(1, agent: "agent-2", [event(id: "2")]))
                        try b.flushAggregates()
                    } catch {
                        Issue.record("\(error)")
                    }
                }
                // From the cache (1 event, as of the check) — then a miss begins the snapshot, which
                // finds the ledger moved on: the body runs again and both answers are fresh.
                let usage = try a.periodTotals(tenant: "acme", metric: "api_calls", period: april).usage?.count
                let users = try a.uniqueCount(tenant: "acme", metric: "active_users", property: "user", period: april).usage
                return (usage, users)
            }
            #expect(runs == 2)
            #expect(answer.0 == 2 && answer.1 == 0)
        }
    }
}

extension PostgresBackendTests {
    /// Reconciliation counts travel through the aggregate log (migration 10): nothing is in the
    /// table until a fold, a read folds first, and every batch is counted once whichever
    /// collector folds it, however often it is read.
    @Test func reconciliationCountsAreFoldedOnceWhicheverCollectorFolds() throws {
        try withTwoCollectors("reconfold") { server, name, a, b in
            let april = period("2026-04")
            _ = try a.commit(batch(1, [event(id: "1"), event(id: "2"), event("globex", id: "3")]))
            // The same events again from another agent through the other collector: duplicates.
            _ = try b.commit(batch(1, agent: "agent-2", [event(id: "1"), event(id: "2")]))
            #expect(try server.psql("SELECT count(*) FROM reconciliation", database: name) == "0")
            #expect(try server.psql("SELECT count(*) FROM aggregate_log WHERE reconciliation IS NOT NULL", database: name) == "2")

            func counts(_ store: PostgresLedgerStore) throws -> [String: [Int64]] {
                var found: [String: [Int64]] = [:]
                for row in try store.reconciliation(ReconciliationFilter(period: april)) {
                    let c = row.counts
                    found["\(row.tenant)/\(row.agent)"] = [c.received, c.accepted, c.duplicate, c.late, c.rejected]
                }
                return found
            }
            let expected: [String: [Int64]] = [
                "acme/agent-1": [2, 2, 0, 0, 0], "globex/agent-1": [1, 1, 0, 0, 0], "acme/agent-2": [2, 0, 2, 0, 0],
            ]
            #expect(try counts(a) == expected)
            #expect(try server.psql("SELECT count(*) FROM aggregate_log", database: name) == "0")
            // Read again, and from the other collector: folded once, counted once.
            #expect(try counts(a) == expected)
            #expect(try counts(b) == expected)
            #expect(try b.tenants(in: april) == ["acme", "globex"])

            // A batch of a new tenant, folded by the collector that did not write it.
            _ = try b.commit(batch(2, agent: "agent-2", [event("initech", id: "9")]))
            #expect(try a.hasSeen(tenant: "initech", lookingFirstIn: april))
            var more = expected
            more["initech/agent-2"] = [1, 1, 0, 0, 0]
            #expect(try counts(b) == more)
        }
    }

    /// The collector's scheduled fold does not wait while another collector folds (it would hold
    /// a writer, and so its commits, until then); a read's fold does wait, and then folds.
    @Test func theScheduledFoldSkipsWhileAnotherCollectorFolds() throws {
        try withTwoCollectors("foldskip") { server, name, a, b in
            _ = try a.commit(batch(1, [event(id: "1")]))
            let lock = "SELECT pg_advisory_xact_lock(\(PostgresSchema.lockNamespace), \(PostgresSchema.Lock.fold.rawValue))"
            // b holds the fold lock, as a fold in progress does; a's scheduled fold runs on another
            // thread and must return while b still holds it.
            nonisolated(unsafe) let scheduled = a
            let done = DispatchSemaphore(value: 0)
            let failure = Mutex<String?>(nil)
            var returned = false
            try b.session.transaction("holding the fold lock") { () throws(LedgerError) in
                try b.session.execute(lock, "taking the fold lock")
                Thread {
                    do { try scheduled.foldAggregatesUnlessFolding() } catch { failure.withLock { $0 = "\(error)" } }
                    done.signal()
                }.start()
                // A deadline, so that a fold that waits fails the test instead of hanging it.
                returned = done.wait(timeout: .now() + 20) == .success
            }
            if !returned { done.wait() }
            #expect(returned, "the scheduled fold waited for the other collector's fold")
            #expect(failure.withLock { $0 } == nil)
            #expect(try server.psql("SELECT count(*) FROM aggregate_log", database: name) == "1", "skipped: another fold held the lock")
            try a.foldAggregatesUnlessFolding()
            #expect(try server.psql("SELECT count(*) FROM aggregate_log", database: name) == "0", "folded once the lock was free")
            #expect(try server.psql("SELECT sum(count) FROM usage_hourly WHERE dimension = ''", database: name) == "1")
        }
    }

    /// A log row whose counts do not parse stops the fold with a clear error and loses nothing:
    /// the row and every other stay in the log, and the tables are untouched.
    @Test func aCorruptReconciliationLogRowIsReportedAndKept() throws {
        try withTwoCollectors("reconcorrupt") { server, name, a, _ in
            _ = try a.commit(batch(1, [event(id: "1")]))
            // A row no process holds in memory (its collector restarted), so the fold reads it.
            a.logMemory = PostgresLogMemory()
            _ = try server.psql("UPDATE aggregate_log SET reconciliation = '\\x01ff'::bytea", database: name)
            #expect {
                _ = try a.reconciliation(ReconciliationFilter())
            } throws: { error in
                "\(error)".contains("reconciliation counts do not parse")
            }
            #expect(try server.psql("SELECT count(*) FROM aggregate_log", database: name) == "1")
            #expect(try server.psql("SELECT count(*) FROM reconciliation", database: name) == "0")
            #expect(try server.psql("SELECT count(*) FROM usage_hourly", database: name) == "0")
        }
    }
}

/// Two stores — two collectors — on one fresh database, closed and the database dropped after
/// `body`. Skips (as every PostgreSQL test) when no server can run outside CI.
private func withTwoCollectors(
    _ prefix: String, _ body: (PostgresTestServer, String, PostgresLedgerStore, PostgresLedgerStore) throws -> Void
) throws {
    guard let server = try PostgresTestServer.shared() else { return }
    let url = try server.createDatabase(prefix)
    let name = try #require(PostgresTestServer.databaseName(in: url))
    defer { server.dropDatabase(name) }
    let a = try PostgresLedgerStore(address: PostgresAddress(parsing: url), configuration: TestLedger.configuration)
    defer { a.close() }
    let b = try PostgresLedgerStore(address: PostgresAddress(parsing: url), configuration: TestLedger.configuration)
    defer { b.close() }
    try body(server, name, a, b)
}

/// A read as the collector's ledger reader makes it: in a snapshot that found the aggregate log
/// empty, folding first when it was not.
private func read<T>(_ store: PostgresLedgerStore, _ body: () throws(LedgerError) -> T) throws -> T {
    while true {
        let answer = try store.withSnapshot { () throws(LedgerError) -> T? in
            guard try !store.hasUnfoldedAggregates() else { return nil }
            return try body()
        }
        if let answer { return answer }
        try store.flushAggregates()
    }
}

extension PostgresBackendTests {
    /// Large answers are taken row by row as they arrive, each row's bytes copied out of
    /// postgres-nio's receive buffer (`PostgresSession.rows`, what the fold and the merging reader
    /// use for the aggregate log): every row comes back whole and in order, rows of a megabyte
    /// included; an error thrown for a row is the error the caller sees; the session answers the
    /// next statement as before.
    @Test func rowsTakenAsTheyArriveAreWholeAndInOrder() throws {
        guard let server = try PostgresTestServer.shared() else { return }
        let url = try server.createDatabase("rows")
        let name = try #require(PostgresTestServer.databaseName(in: url))
        defer { server.dropDatabase(name) }
        let session = try PostgresSession(address: PostgresAddress(parsing: url), logger: Logger(label: "test"))
        defer { session.close() }
        let sizes = [0, 1, 100, 70_000, 1_000_000, 3, 250_000]
        let query = PostgresQuery(
            unsafeSQL: """
                SELECT i, decode(repeat(lpad(to_hex(i), 2, '0'), s), 'hex')
                FROM unnest(ARRAY[\(sizes.map(String.init).joined(separator: ","))]) WITH ORDINALITY AS t(s, i) ORDER BY i
                """)
        let rows = try session.rows(query, "reading rows") { (row) throws(LedgerError) in
            do {
                let (index, blob) = try row.decode((Int64, ByteBuffer).self)
                return (index, Array(blob.readableBytesView))
            } catch {
                throw .corruptRow("test row: \(error)")
            }
        }
        #expect(rows.map(\.0) == Array(1...Int64(sizes.count)))
        for ((index, bytes), size) in zip(rows, sizes) {
            #expect(bytes.count == size)
            #expect(bytes.allSatisfy { $0 == UInt8(index) })
        }
        let error = #expect(throws: LedgerError.self) {
            try session.rows(query, "reading rows") { (row) throws(LedgerError) -> Int in throw .corruptRow("refused on purpose") }
        }
        #expect(error.map { "\($0)".contains("refused on purpose") } == true, "\(String(describing: error))")
        let after = try session.query(PostgresQuery(unsafeSQL: "SELECT 41 + 1"), "after")
        #expect(try after.first?.decode(Int.self) == 42)
    }
}

/// The fold takes the cells of the rows this process logged from memory (``PostgresLogMemory``),
/// claims only those and the rows nobody folded since its previous fold, and falls back to
/// reading rows whenever the memory is not exactly the rows it claims.
@Suite struct PostgresLogMemoryTests {
    /// Three collectors on one database, each with its own memory (three processes); not closed
    /// (closing folds everything), the database dropped after `body`.
    private func withCollectors(
        _ prefix: String, _ body: (PostgresTestServer, String, [PostgresLedgerStore]) throws -> Void
    ) throws {
        guard let server = try PostgresTestServer.shared() else { return }
        let url = try server.createDatabase(prefix)
        let name = try #require(PostgresTestServer.databaseName(in: url))
        defer { server.dropDatabase(name) }
        let stores = try (0..<3).map { _ in
            let store = try PostgresLedgerStore(address: PostgresAddress(parsing: url), configuration: TestLedger.configuration)
            store.logMemory = PostgresLogMemory()
            return store
        }
        defer { for store in stores { store.session.close() } }
        try body(server, name, stores)
    }

    private func events(_ seed: UInt64) -> [UsageEvent] {
        workload(count: 800, seed: seed, start: at("2026-04-10T00:00:00Z"), spanHours: 48, tenants: 5)
    }

    private func expectExact(_ store: PostgresLedgerStore, _ server: PostgresTestServer, _ name: String, events: Int) throws {
        #expect(try server.psql("SELECT count(*) FROM aggregate_log", database: name) == "0")
        for tenant in 0..<5 {
            let drift = try store.recomputeAggregates(tenant: "tenant-\(tenant)", period: period("2026-04"))
            #expect(drift.differences.isEmpty, "tenant-\(tenant): \(drift.differences.prefix(3))")
        }
        // Every distinct event counted once: the audit above compares against the raw rows,
        // this against what was sent.
        let raw = try server.psql("SELECT count(*) FROM raw_events", database: name)
        #expect(try server.psql("SELECT sum(count) FROM usage_monthly WHERE dimension = ''", database: name) == raw)
        #expect(Int(raw) ?? 0 > events / 2)
    }

    @Test func eachCollectorFoldsItsOwnRowsFromMemoryAndADeadOnesOneFoldLater() throws {
        try withCollectors("logmemory") { server, name, stores in
            let (a, b, dead) = (stores[0], stores[1], stores[2])
            let all = events(31)
            var sequence: UInt64 = 0
            var offset = 0
            func send(_ store: PostgresLedgerStore, batches: Int) throws {
                for _ in 0..<batches {
                    sequence += 1
                    _ = try store.commit(batch(sequence, now: "2026-04-12T00:00:00Z", Array(all[offset..<offset + 50])))
                    offset += 50
                }
            }
            try send(a, batches: 3)
            try send(b, batches: 2)
            try send(dead, batches: 2)
            #expect(a.logMemory.heldIDs.count == 3)
            dead.logMemory = PostgresLogMemory()  // the process died: its memory is gone, its rows are not

            try a.foldAggregatesUnlessFolding()
            #expect(a.lastFold == (3, 0), "a's own rows, from memory")
            #expect(try server.psql("SELECT count(*) FROM aggregate_log", database: name) == "4")
            try b.foldAggregatesUnlessFolding()
            #expect(b.lastFold == (2, 0))
            #expect(try server.psql("SELECT count(*) FROM aggregate_log", database: name) == "2", "the dead collector's rows wait")

            try send(a, batches: 2)
            try a.foldAggregatesUnlessFolding()
            #expect(a.lastFold == (2, 2), "a's new rows from memory, the dead collector's read back")
            try send(a, batches: 4)
            try a.foldAggregates()
            #expect(a.lastFold == (4, 0), "a read's fold takes every row, a's from memory")
            try expectExact(a, server, name, events: offset)
        }
    }

    @Test func heldRowsFoldedByAnotherCollectorAreReadBackNotCountedTwice() throws {
        try withCollectors("logmemoryelse") { server, name, stores in
            let (a, b) = (stores[0], stores[1])
            let all = events(32)
            for index in 0..<3 {
                _ = try a.commit(batch(UInt64(index + 1), now: "2026-04-12T00:00:00Z", Array(all[index * 100..<(index + 1) * 100])))
            }
            // A read's fold elsewhere claims every row, a's included, reading them.
            try b.foldAggregates()
            #expect(b.lastFold == (0, 3))
            _ = try a.commit(batch(4, now: "2026-04-12T00:00:00Z", Array(all[300..<400])))
            #expect(a.logMemory.heldIDs.count == 4)
            // Three of a's four held rows are gone: the merged cells are dropped, and the fourth
            // row waits for a fold that reads it.
            try a.foldAggregatesUnlessFolding()
            #expect(a.logMemory.heldIDs.isEmpty)
            #expect(try server.psql("SELECT count(*) FROM aggregate_log", database: name) == "1")
            try a.foldAggregatesUnlessFolding()
            #expect(a.lastFold == (0, 1))
            try expectExact(a, server, name, events: 400)
        }
    }

    @Test func aMemoryPastItsLimitHoldsNothingUntilTheNextFold() throws {
        let memory = PostgresLogMemory(limit: 3)
        var cells = AggregateCells()
        for hour in ["2026-04-13T12:00:00Z", "2026-04-13T13:00:00Z"] {
            let one = event(at: hour)
            try cells.add(one, fingerprint: Fingerprint(of: one), billedIn: nil, groupBy: [])
        }
        memory.add(id: 1, cells: cells, counts: nil)
        #expect(memory.heldIDs == [1])
        memory.add(id: 2, cells: cells, counts: nil)  // 4 cells: past the limit
        #expect(memory.heldIDs.isEmpty)
        memory.add(id: 3, cells: cells, counts: nil)
        #expect(memory.heldIDs.isEmpty, "nothing more until a fold takes the memory")
        let taken = memory.take()
        #expect(taken.overflowed && taken.ids.isEmpty && taken.cells.isEmpty)
        memory.add(id: 4, cells: cells, counts: nil)
        #expect(memory.heldIDs == [4])
    }
}

/// Raw rows go in with a plain `INSERT` when their keys are believed new: keys this process
/// stored recently (``PostgresRecentKeys``) are duplicates without asking; a duplicate it has not
/// seen fails the plain insert, which falls back to `ON CONFLICT` in the same transaction.
@Suite struct PostgresRecentKeysTests {
    /// 600 events with distinct keys (the workload's own retries left out, so that every repeat
    /// below is one the test made).
    private func events(_ seed: UInt64) -> [UsageEvent] {
        var seen = Set<RawKey>()
        let all = workload(count: 700, seed: seed, start: at("2026-04-10T00:00:00Z"), spanHours: 48, tenants: 3)
        return Array(all.filter { seen.insert(key($0)).inserted }.prefix(600))
    }

    private func key(_ event: UsageEvent) -> RawKey { RawKey(timestamp: event.timestamp, fingerprint: Fingerprint(of: event)) }

    @Test func duplicatesThisProcessStoredAreKnownAndOthersFallBackToOnConflict() throws {
        guard let server = try PostgresTestServer.shared() else { return }
        let url = try server.createDatabase("recentkeys")
        let name = try #require(PostgresTestServer.databaseName(in: url))
        defer { server.dropDatabase(name) }
        let (metricsA, metricsB) = (TestMetrics(), TestMetrics())
        let a = try PostgresLedgerStore(address: PostgresAddress(parsing: url), configuration: TestLedger.configuration, metrics: metricsA)
        defer { a.close() }
        let b = try PostgresLedgerStore(address: PostgresAddress(parsing: url), configuration: TestLedger.configuration, metrics: metricsB)
        defer { b.close() }
        func batches(_ metrics: TestMetrics, _ path: String) throws -> Int64 {
            try metrics.expectCounter("tally_ledger_raw_insert_batches_total", [("path", path)]).totalValue
        }
        do {
            a.recentKeys = PostgresRecentKeys()
            b.recentKeys = PostgresRecentKeys()  // another process: it saw none of a's keys
            let all = events(41)
            let first = Array(all[0..<200])
            let outcome1 = try a.commit(batch(1, agent: "agent-a", now: "2026-04-12T00:00:00Z", first))
            #expect(all.count == 600)
            #expect(outcome1.accepted + outcome1.late + outcome1.adjusted == 200 && outcome1.duplicate == 0)
            #expect(a.rawInserts.plain == 1 && a.rawInserts.fallbacks == 0)
            #expect(a.recentKeys.count == 200)

            // a's next batch repeats 20 of its own events: known, no fallback.
            let second = Array(all[200..<400]) + Array(first[0..<20])
            let outcome2 = try a.commit(batch(2, agent: "agent-a", now: "2026-04-12T00:00:00Z", second))
            #expect(outcome2.duplicate == 20 && outcome2.accepted + outcome2.late + outcome2.adjusted == 200)
            #expect(a.rawInserts.known == 20)
            #expect(a.rawInserts.plain == 2 && a.rawInserts.fallbacks == 0 && a.rawInserts.onConflict == 0)

            // b has never seen those: its plain insert fails on the first repeat and the batch
            // goes in again with ON CONFLICT, in the same transaction.
            let third = Array(all[400..<500]) + Array(second[100..<130])
            let outcome3 = try b.commit(batch(1, agent: "agent-b", now: "2026-04-12T00:00:00Z", third))
            #expect(outcome3.duplicate == 30 && outcome3.accepted + outcome3.late + outcome3.adjusted == 100)
            #expect(b.rawInserts.fallbacks == 1 && b.rawInserts.onConflict == 1 && b.rawInserts.plain == 0)
            // Learnt: the fallback's keys, stored and found stored, are known to b now.
            #expect(b.recentKeys.contains(third.map(key)).allSatisfy { $0 })
            // After a fallback the next batch goes straight to ON CONFLICT, the one after tries
            // a plain insert again.
            _ = try b.commit(batch(2, agent: "agent-b", now: "2026-04-12T00:00:00Z", Array(all[500..<550])))
            #expect(b.rawInserts.onConflict == 2 && b.rawInserts.plain == 0)
            _ = try b.commit(batch(3, agent: "agent-b", now: "2026-04-12T00:00:00Z", Array(all[550..<600])))
            #expect(b.rawInserts.plain == 1 && b.rawInserts.fallbacks == 1)

            // Every distinct event stored once, and counted once.
            let raw = try server.psql("SELECT count(*) FROM raw_events", database: name)
            #expect(raw == "600")
            try a.flushAggregates()
            #expect(try server.psql("SELECT sum(count) FROM usage_monthly WHERE dimension = ''", database: name) == raw)
            let recorded = try server.psql("SELECT count(*) FROM duplicate_events", database: name)
            #expect(recorded == "50", "each duplicate recorded")
            for tenant in 0..<3 {
                let drift = try a.recomputeAggregates(tenant: "tenant-\(tenant)", period: period("2026-04"))
                #expect(drift.differences.isEmpty, "tenant-\(tenant): \(drift.differences.prefix(3))")
            }
            // The same, as an operator sees it.
            #expect(try batches(metricsA, "plain") == 2 && batches(metricsA, "fallback") == 0)
            #expect(try metricsA.expectCounter("tally_ledger_known_duplicate_events_total").totalValue == 20)
            #expect(try batches(metricsB, "plain") == 1 && batches(metricsB, "fallback") == 1 && batches(metricsB, "on_conflict") == 1)
        }
    }

    @Test func aRolledBackBatchLeavesNoKeysBehind() throws {
        try withTwoCollectors("recentkeysrollback") { server, name, a, _ in
            a.recentKeys = PostgresRecentKeys()
            let some = Array(events(42)[0..<100])
            a.crashBeforeNextCommit = true
            #expect(throws: LedgerError.self) { try a.commit(batch(1, now: "2026-04-12T00:00:00Z", some)) }
            #expect(a.recentKeys.count == 0, "nothing committed, nothing known")
            let raw = try server.psql("SELECT count(*) FROM raw_events", database: name)
            #expect(raw == "0")
        }
    }

    @Test func theOldestKeysAreEvictedFirst() {
        let keys = (0..<5).map { RawKey(timestamp: EventTime(microseconds: Int64($0)), fingerprint: Fingerprint(high: 1, low: UInt64($0))) }
        let recent = PostgresRecentKeys(capacity: 3)
        recent.add(Array(keys[0..<2]))
        recent.add([keys[1], keys[2]])  // keys[1] again: held once
        #expect(recent.count == 3)
        #expect(recent.contains(keys) == [true, true, true, false, false])
        recent.add([keys[3], keys[4]])
        #expect(recent.contains(keys) == [false, false, true, true, true])
        #expect(recent.count == 3)
    }
}
