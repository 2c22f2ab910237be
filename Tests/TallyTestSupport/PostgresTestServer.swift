import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// One throwaway PostgreSQL server for a whole test run, started on first use and shared by every
/// test in the process; each test takes its own database from it (``createDatabase(_:)``).
///
/// Why it looks the way it does:
/// - **One server per run**: `initdb` and a server start cost seconds; a database costs
///   milliseconds. Tests isolate themselves by database, never by server.
/// - **Dies with the test process**: `postgres` is run directly (not daemonised by `pg_ctl`) as a
///   child of this process through `setpriv --pdeathsig KILL`, so the kernel kills it even when the
///   test process is killed with SIGKILL and no exit handler runs. On a normal exit an `atexit`
///   handler stops it (fast shutdown) and removes its temporary directory.
/// - **Runs as `nobody` under root**: `initdb` and `postgres` refuse to run as root, and CI runs
///   tests as root; then both run as uid/gid 65534 with no supplementary groups, which owns the
///   temporary directory.
/// - **Not durable by default**: tests never kill PostgreSQL itself, so the shared server runs
///   with `fsync`, `synchronous_commit` and `full_page_writes` off. A benchmark that measures
///   commits starts its own with `PostgresTestServer(durable: true)`.
///
/// Clients connect over TCP on 127.0.0.1 as the superuser `tally` with ``password`` (SCRAM), as
/// the collector does in production.
public final class PostgresTestServer: Sendable {
    public let host = "127.0.0.1"
    public let port: Int
    /// The password of the superuser `tally`: random for each server.
    public let password: String
    /// The pid of the postmaster (for tests that look at the process, e.g. its user).
    public var pid: Int32 { process.withLock { $0.pid } }
    /// Whether the server flushes its commits to disk (see the type's documentation).
    public let durable: Bool

    let directory: URL
    private let tools: PostgresTools
    private let settings: [String]
    private let process: Mutex<PostmasterProcess>

    /// The process-wide server, started on the first call (thread-safe; later calls wait for it and
    /// share it). Returns nil, after printing one loud line to stderr, when no PostgreSQL binaries
    /// are installed and the environment variable `CI` is not `true` or `1`; in CI a missing
    /// installation, like any failure to start, throws.
    public static func shared() throws -> PostgresTestServer? {
        try sharedServer.get()
    }

    /// ``shared()`` from async code. The first call starts the server (`initdb`, `pg_ctl`:
    /// seconds on a loaded machine) and every call meanwhile waits for it, so they wait off the
    /// cooperative pool (``offThePool(_:)``).
    public static func shared() async throws -> PostgresTestServer? {
        try await offThePool { try sharedServer.get() }
    }

    // A static let is initialised exactly once, under a lock, on first access.
    private static let sharedServer: Result<PostgresTestServer?, any Error> = Result {
        do {
            return try PostgresTestServer(durable: false)
        } catch PostgresTestServerError.binariesMissing where !runningInCI {
            FileHandle.standardError.write(Data("\(skipLine)\n".utf8))
            return nil
        }
    }

    static let skipLine =
        "PostgreSQL tests SKIPPED: no initdb/postgres found under /usr/lib/postgresql/*/bin — install Debian's postgresql"

    static var runningInCI: Bool {
        let value = ProcessInfo.processInfo.environment["CI"]?.lowercased()
        return value == "true" || value == "1"
    }

    /// Starts a server of its own (most tests want ``shared()`` instead): `initdb` into a fresh
    /// directory under /tmp, then `postgres` on a free loopback port, waiting up to 60 s until it
    /// answers a query. It is stopped and its directory removed when the process exits.
    /// `settings` are extra `name=value` server settings (`-c`), e.g. a benchmark's
    /// `shared_preload_libraries=pg_stat_statements`.
    public init(durable: Bool, settings extra: [String] = []) throws {
        let tools = try PostgresTools.locate()
        TemporaryDirectory.removeLeftovers()
        let directory = try TemporaryDirectory.make()
        do {
            let password = Self.randomString(length: 24)
            let started = try Self.start(
                tools: tools, directory: directory, password: password, durable: durable, settings: extra)
            self.tools = tools
            self.directory = directory
            self.password = password
            self.durable = durable
            self.port = started.port
            self.settings = extra
            self.process = Mutex(started.process)
        } catch {
            try? FileManager.default.removeItem(at: directory)
            throw error
        }
        ExitCleanup.register(self)
    }

    /// `postgres://tally:PASSWORD@127.0.0.1:PORT/DATABASE?sslmode=disable`
    public func url(database: String) -> String {
        "postgres://tally:\(password)@\(host):\(port)/\(database)?sslmode=disable"
    }

    /// Creates a fresh, empty database named `prefix` (lowercased, reduced to `[a-z0-9_]`) plus a
    /// random suffix, and returns its URL (``databaseName(in:)`` gives the name back).
    public func createDatabase(_ prefix: String) throws -> String {
        let name = Self.databaseName(prefix: prefix, suffix: Self.randomString(length: 10))
        _ = try psql("CREATE DATABASE \"\(name)\"", database: "postgres")
        return url(database: name)
    }

    /// Drops a database made by ``createDatabase(_:)``, closing its connections; errors are ignored
    /// (the server and all its databases go away at exit anyway).
    public func dropDatabase(_ name: String) {
        guard Self.isSafeIdentifier(name) else { return }
        _ = try? psql("DROP DATABASE IF EXISTS \"\(name)\" WITH (FORCE)", database: "postgres")
    }

    /// Runs `sql` with `psql -At` as `tally` in `database` and returns what it printed, without the
    /// trailing newline; throws with psql's stderr when it fails.
    public func psql(_ sql: String, database: String) throws -> String {
        let output = try Self.runPsql(sql, database: database, tools: tools, port: port, password: password)
        guard output.status == 0 else {
            throw PostgresTestServerError.commandFailed(
                command: "psql -c \(sql)", status: output.status, stderr: output.stderr)
        }
        var text = output.stdout
        while text.hasSuffix("\n") { text.removeLast() }
        return text
    }

    /// The database name in a URL made by ``url(database:)`` or ``createDatabase(_:)``.
    public static func databaseName(in url: String) -> String? {
        guard let slash = url.lastIndex(of: "/") else { return nil }
        let name = url[url.index(after: slash)...].prefix { $0 != "?" }
        return name.isEmpty ? nil : String(name)
    }

    /// Stops the server (fast shutdown, then SIGKILL after 15 s) and removes its directory.
    public func stop() {
        process.withLock { $0 }.stop()
        try? FileManager.default.removeItem(at: directory)
    }

    // MARK: Crashing (for chaos tests; never the shared server)

    /// Kills the whole server with SIGKILL, as a crash would: the postmaster (stopped first, so it
    /// starts no process meanwhile) and every process it had started. Returns once they are gone.
    public func crash() {
        process.withLock { $0 }.killWithChildren()
    }

    /// Makes every transaction read-only from each session's next one on, the sessions already
    /// open included (`default_transaction_read_only` through `ALTER SYSTEM` and a reload), as a
    /// primary demoted to a standby leaves the clients still connected to it; writes then fail
    /// with SQLSTATE 25006. `false` makes it writable again.
    public func setReadOnly(_ readOnly: Bool) throws {
        let statement =
            readOnly ? "ALTER SYSTEM SET default_transaction_read_only = on" : "ALTER SYSTEM RESET default_transaction_read_only"
        _ = try psql(statement, database: "postgres")
        _ = try psql("SELECT pg_reload_conf()", database: "postgres")
    }

    /// Starts the server again on its data directory and port after ``crash()`` (it recovers from
    /// its WAL), waiting up to 60 s until it answers.
    public func restart() throws {
        let relaunched = try Self.launch(
            tools: tools, directory: directory, password: password, durable: durable, settings: settings, port: port)
        switch relaunched.readiness {
        case .ready: process.withLock { $0 = relaunched.process }
        case .exited(let status, let logTail):
            throw PostgresTestServerError.startFailed(reason: "postgres exited with status \(status) on restart", logTail: logTail)
        case .timedOut(let logTail):
            relaunched.process.stop()
            throw PostgresTestServerError.startFailed(reason: "postgres did not answer within 60 s of its restart", logTail: logTail)
        }
    }

    // MARK: Starting

    private static func start(
        tools: PostgresTools, directory: URL, password: String, durable: Bool, settings extra: [String]
    ) throws -> (port: Int, process: PostmasterProcess) {
        let passwordFile = directory.appendingPathComponent("pwfile")
        let sockets = directory.appendingPathComponent("socket")
        let data = directory.appendingPathComponent("data")
        try Data(password.utf8).write(to: passwordFile)
        chmod(passwordFile.path, 0o600)
        try FileManager.default.createDirectory(at: sockets, withIntermediateDirectories: false)
        try TemporaryDirectory.handOver(directory, to: tools.serverUser)

        var initdb = [
            "-D", data.path, "--auth-local=trust", "--auth-host=scram-sha-256", "--username=tally",
            "--pwfile=\(passwordFile.path)", "--encoding=UTF8", "--locale=C", "--no-instructions",
        ]
        if !durable { initdb.append("--no-sync") }
        let (initExecutable, initArguments) = tools.asServerUser(tools.initdb, initdb)
        let initialised = try tools.run(initExecutable, initArguments, directory: directory)
        guard initialised.status == 0 else {
            throw PostgresTestServerError.commandFailed(
                command: "initdb", status: initialised.status, stderr: initialised.stderr + initialised.stdout)
        }

        // The port is free when chosen but may be taken before postgres binds it: try again then.
        var attempt = 0
        while true {
            attempt += 1
            let port = try freeLoopbackPort()
            let (process, readiness) = try launch(
                tools: tools, directory: directory, password: password, durable: durable, settings: extra, port: port)
            switch readiness {
            case .ready:
                return (port, process)
            case .exited(_, let logTail) where attempt < 3 && logTail.contains("Address already in use"):
                continue
            case .exited(let status, let logTail):
                throw PostgresTestServerError.startFailed(
                    reason: "postgres exited with status \(status)", logTail: logTail)
            case .timedOut(let logTail):
                process.stop()
                throw PostgresTestServerError.startFailed(
                    reason: "postgres did not answer within 60 s", logTail: logTail)
            }
        }
    }

    /// Spawns `postgres` on the initialised data directory and waits until it answers, exits or
    /// 60 s pass.
    private static func launch(
        tools: PostgresTools, directory: URL, password: String, durable: Bool, settings extra: [String], port: Int
    ) throws -> (process: PostmasterProcess, readiness: Readiness) {
        let sockets = directory.appendingPathComponent("socket")
        let data = directory.appendingPathComponent("data")
        let log = directory.appendingPathComponent("postgres.log")
        var settings = ["listen_addresses=127.0.0.1", "max_connections=200"] + extra
        if !durable {
            // Tests never kill PostgreSQL, so losing its unflushed commits cannot happen to them.
            settings += ["fsync=off", "synchronous_commit=off", "full_page_writes=off"]
            // Dynamic shared memory in files under the data directory rather than /dev/shm,
            // so a run killed with SIGKILL leaves nothing there (its directory is swept).
            settings.append("dynamic_shared_memory_type=mmap")
        }
        let arguments =
            ["-D", data.path, "-p", String(port), "-k", sockets.path] + settings.flatMap { ["-c", $0] }
        let (executable, prefixed) = tools.asServerUser(tools.postgres, arguments)
        let process = try PostmasterProcess.spawn(
            executable: executable, arguments: prefixed, directory: directory, log: log)
        return (process, waitUntilReady(process, tools: tools, port: port, password: password, log: log))
    }

    private enum Readiness {
        case ready
        case exited(status: Int32, logTail: String)
        case timedOut(logTail: String)
    }

    /// Polls with `psql -c 'select 1'` (which also proves the password works) until it succeeds,
    /// the server exits, or 60 s pass.
    private static func waitUntilReady(
        _ process: PostmasterProcess, tools: PostgresTools, port: Int, password: String, log: URL
    ) -> Readiness {
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            if let status = process.exitStatus { return .exited(status: status, logTail: tail(of: log)) }
            let probe = try? runPsql("select 1", database: "postgres", tools: tools, port: port, password: password)
            if probe?.status == 0 { return .ready }
            Thread.sleep(forTimeInterval: 0.1)
        }
        return .timedOut(logTail: tail(of: log))
    }

    /// `psql` as `tally` over TCP with the password (as the collector connects), no psqlrc,
    /// unaligned tuples only.
    private static func runPsql(
        _ sql: String, database: String, tools: PostgresTools, port: Int, password: String
    ) throws -> PostgresTools.Output {
        try tools.run(
            tools.psql,
            ["-X", "-q", "-A", "-t", "-h", "127.0.0.1", "-p", String(port), "-U", "tally", "-d", database, "-c", sql],
            environment: ["PGPASSWORD": password, "PGCONNECT_TIMEOUT": "10"]
        )
    }

    static func tail(of log: URL, lines: Int = 20) -> String {
        guard let text = try? String(contentsOf: log, encoding: .utf8) else { return "(no log)" }
        let all = text.split(separator: "\n", omittingEmptySubsequences: false)
        return all.suffix(lines).joined(separator: "\n")
    }

    // MARK: Names

    static func databaseName(prefix: String, suffix: String) -> String {
        var base = String(prefix.lowercased().map { isIdentifierCharacter($0) ? $0 : "_" }.prefix(40))
        if let first = base.first, first.isLetter || first == "_" {} else { base = "t_" + base }
        return base + "_" + suffix
    }

    static func isSafeIdentifier(_ name: String) -> Bool {
        !name.isEmpty && name.count <= 63 && name.allSatisfy(isIdentifierCharacter)
    }

    private static func isIdentifierCharacter(_ character: Character) -> Bool {
        character == "_" || ("a"..."z").contains(character) || ("0"..."9").contains(character)
    }

    static func randomString(length: Int) -> String {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyz0123456789")
        var generator = SystemRandomNumberGenerator()
        return String((0..<length).map { _ in alphabet[Int(generator.next(upperBound: UInt(alphabet.count)))] })
    }
}

/// Why a ``PostgresTestServer`` could not start or a command against it failed.
public enum PostgresTestServerError: Error, CustomStringConvertible {
    /// No `initdb`/`postgres`/`psql` under /usr/lib/postgresql/*/bin or on PATH.
    case binariesMissing(searched: String)
    /// `setpriv` (util-linux) is needed to tie the server's life to the test process.
    case setprivMissing
    case commandFailed(command: String, status: Int32, stderr: String)
    case startFailed(reason: String, logTail: String)
    case system(String)

    public var description: String {
        switch self {
        case .binariesMissing(let searched):
            "PostgreSQL binaries (initdb, postgres, psql) not found in \(searched): install Debian's postgresql"
        case .setprivMissing:
            "setpriv not found: install util-linux"
        case .commandFailed(let command, let status, let stderr):
            "\(command) failed with status \(status): \(stderr.trimmingCharacters(in: .whitespacesAndNewlines))"
        case .startFailed(let reason, let logTail):
            "PostgreSQL test server did not start: \(reason); its log ends with:\n\(logTail)"
        case .system(let message):
            message
        }
    }
}

/// Stops every server this process started when it exits normally (`atexit`).
enum ExitCleanup {
    private static let servers = Mutex<[PostgresTestServer]>([])
    private static let hook: Void = { atexit { ExitCleanup.stopAll() } }()

    static func register(_ server: PostgresTestServer) {
        _ = hook
        servers.withLock { $0.append(server) }
    }

    private static func stopAll() {
        let all = servers.withLock { servers in
            defer { servers.removeAll() }
            return servers
        }
        for server in all { server.stop() }
    }
}
