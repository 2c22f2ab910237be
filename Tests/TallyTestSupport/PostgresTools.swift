import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The PostgreSQL binaries a ``PostgresTestServer`` needs, `setpriv`, and the user the server
/// runs as, with the one way this module runs an external command.
struct PostgresTools: Sendable {
    let initdb: URL
    let postgres: URL
    let psql: URL
    let setpriv: URL
    /// `nobody` (65534) when the test process is root, since initdb and postgres refuse root;
    /// nil when already unprivileged.
    let serverUser: UInt32?

    static let debianRoot = "/usr/lib/postgresql"

    /// Debian's /usr/lib/postgresql/<version>/bin (the highest version that has all three), else
    /// PATH. Throws ``PostgresTestServerError/binariesMissing(searched:)`` when neither has them.
    static func locate() throws -> PostgresTools {
        let directories = debianBinDirectories() + pathDirectories()
        guard let initdb = find("initdb", in: directories), let postgres = find("postgres", in: directories),
            let psql = find("psql", in: directories)
        else {
            throw PostgresTestServerError.binariesMissing(searched: "\(debianRoot)/*/bin and PATH")
        }
        guard let setpriv = find("setpriv", in: ["/usr/bin", "/bin"] + pathDirectories()) else {
            throw PostgresTestServerError.setprivMissing
        }
        return PostgresTools(
            initdb: initdb, postgres: postgres, psql: psql, setpriv: setpriv,
            serverUser: geteuid() == 0 ? 65534 : nil)
    }

    /// Version directories that hold initdb, postgres and psql, highest version first.
    private static func debianBinDirectories() -> [String] {
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: debianRoot)) ?? []
        return
            versions
            .compactMap { version in Double(version).map { (number: $0, path: "\(debianRoot)/\(version)/bin") } }
            .filter { candidate in
                ["initdb", "postgres", "psql"].allSatisfy {
                    FileManager.default.isExecutableFile(atPath: "\(candidate.path)/\($0)")
                }
            }
            .sorted { $0.number > $1.number }
            .map(\.path)
    }

    private static func pathDirectories() -> [String] {
        (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init)
    }

    private static func find(_ name: String, in directories: [String]) -> URL? {
        directories.lazy.map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
            .map { URL(fileURLWithPath: $0) }
    }

    /// `binary arguments` run through setpriv: as `nobody` with no supplementary groups when root,
    /// and always with SIGKILL as parent-death signal, so the child cannot outlive the thread
    /// (and so the process) that started it.
    func asServerUser(_ binary: URL, _ arguments: [String]) -> (executable: URL, arguments: [String]) {
        var prefix: [String] = []
        if let user = serverUser { prefix = ["--reuid=\(user)", "--regid=\(user)", "--clear-groups"] }
        return (setpriv, prefix + ["--pdeathsig", "KILL", "--", binary.path] + arguments)
    }

    struct Output {
        let status: Int32
        let stdout: String
        let stderr: String
    }

    /// Runs a command to completion and captures its output. The environment is this process's
    /// without any `PG*` variable (a stray PGHOST or PGDATABASE must not redirect a test), plus
    /// `environment` and LC_ALL=C.
    func run(
        _ executable: URL, _ arguments: [String], environment: [String: String] = [:], directory: URL? = nil
    ) throws -> Output {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        process.environment = Self.environment(adding: environment)
        if let directory { process.currentDirectoryURL = directory }
        let stdout = Pipe()
        let stderr = Pipe()
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = stdout
        process.standardError = stderr
        try ChildSpawner.run(process)
        // Both pipes are drained at once: a child blocked on a full stderr would never finish stdout.
        let errors = CapturedBytes()
        let errorsRead = DispatchSemaphore(value: 0)
        let errorHandle = stderr.fileHandleForReading
        DispatchQueue.global().async {
            errors.set(errorHandle.readDataToEndOfFile())
            errorsRead.signal()
        }
        let output = stdout.fileHandleForReading.readDataToEndOfFile()
        errorsRead.wait()
        process.waitUntilExit()
        return Output(
            status: process.terminationStatus,
            stdout: String(decoding: output, as: UTF8.self),
            stderr: String(decoding: errors.value, as: UTF8.self)
        )
    }

    static func environment(adding extra: [String: String]) -> [String: String] {
        var environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("PG") }
        environment["LC_ALL"] = "C"
        for (key, value) in extra { environment[key] = value }
        return environment
    }
}

/// Bytes handed from the thread that read them to the one that waits for them.
private final class CapturedBytes: Sendable {
    private let bytes = Mutex(Data())
    func set(_ data: Data) { bytes.withLock { $0 = data } }
    var value: Data { bytes.withLock { $0 } }
}
