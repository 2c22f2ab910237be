import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Runs Tally's binaries as an ordinary user, as a service is deployed: when the tests run as
/// root (CI does), through `setpriv` as `nobody` (uid and gid 65534, no supplementary groups,
/// killed if the test process dies); otherwise as the (already unprivileged) test user.
enum Unprivileged {
    static let uid: UInt32 = 65534
    static var isRoot: Bool { getuid() == 0 }

    /// The executable and argument prefix that run `binary` unprivileged; as root, with
    /// `capabilities` (e.g. `sys_nice`) granted as ambient capabilities, as a unit's
    /// `AmbientCapabilities=` or a container's added capabilities would.
    static func command(_ binary: String, capabilities: [String] = []) throws -> (executable: URL, prefix: [String]) {
        let path = try binaryDirectory().appendingPathComponent(binary).path
        guard isRoot else { return (URL(fileURLWithPath: path), []) }
        let granted = capabilities.map { "+" + $0 }.joined(separator: ",")
        let grants = granted.isEmpty ? [] : ["--inh-caps=\(granted)", "--ambient-caps=\(granted)"]
        return (
            URL(fileURLWithPath: "/usr/bin/setpriv"),
            ["--reuid=\(uid)", "--regid=\(uid)", "--clear-groups"] + grants + ["--pdeathsig", "KILL", "--", path]
        )
    }

    /// Gives `url` (recursively) to the unprivileged user, so that it can write there.
    static func handOver(_ url: URL) throws {
        guard isRoot else { return }
        let enumerator = FileManager.default.enumerator(atPath: url.path)
        var paths = [url.path]
        while let next = enumerator?.nextObject() as? String { paths.append(url.appendingPathComponent(next).path) }
        for path in paths where chown(path, uid, uid) != 0 {
            throw HarnessError("chown \(path): \(String(cString: strerror(errno)))")
        }
    }

    /// The built binaries where `nobody` can run them: the build folder when every directory
    /// above it is searchable by others, else a copy in a world-readable temporary folder.
    static func binaryDirectory() throws -> URL {
        try binaryCopy.get()
    }

    private static let binaryCopy: Result<URL, any Error> = Result {
        let built = BinaryRunner.binDirectory
        guard isRoot, !searchableByOthers(built) else { return built }
        let copy = URL(fileURLWithPath: "/tmp/tally-e2e-bin-\(getpid())")
        try? FileManager.default.removeItem(at: copy)
        try FileManager.default.createDirectory(at: copy, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        for binary in ["tally-agent", "tally-collector", "tallyctl"] {
            try FileManager.default.copyItem(at: built.appendingPathComponent(binary), to: copy.appendingPathComponent(binary))
            chmod(copy.appendingPathComponent(binary).path, 0o755)
        }
        return copy
    }

    private static func searchableByOthers(_ url: URL) -> Bool {
        var path = url.standardizedFileURL.path
        while !path.isEmpty && path != "/" {
            var info = stat()
            guard stat(path, &info) == 0, info.st_mode & S_IXOTH != 0 else { return false }
            path = (path as NSString).deletingLastPathComponent
        }
        return true
    }
}
