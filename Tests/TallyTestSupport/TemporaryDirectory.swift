import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The server's directory: /tmp/tally-pg-<test pid>-<random>, holding the cluster (`data`), the
/// Unix socket (`socket`), the password file and the server log.
enum TemporaryDirectory {
    static let prefix = "tally-pg-"

    static func make() throws -> URL {
        let url = URL(fileURLWithPath: "/tmp/\(prefix)\(getpid())-\(PostgresTestServer.randomString(length: 8))")
        try FileManager.default.createDirectory(
            at: url, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        return url
    }

    /// Gives `url` and everything in it to `user` (when the server runs as another user).
    static func handOver(_ url: URL, to user: UInt32?) throws {
        guard let user else { return }
        var paths = [url.path]
        let enumerator = FileManager.default.enumerator(atPath: url.path)
        while let next = enumerator?.nextObject() as? String { paths.append(url.appendingPathComponent(next).path) }
        for path in paths where chown(path, user, user) != 0 {
            throw PostgresTestServerError.system("chown \(path): \(String(cString: strerror(errno)))")
        }
    }

    /// Removes what earlier runs left behind when their test process was killed with SIGKILL: it
    /// took its server with it (parent-death signal) but ran no exit handler, so its directory
    /// and the server's small System V shared memory segment remain.
    static func removeLeftovers() {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/tmp")) ?? []
        for entry in entries where entry.hasPrefix(prefix) {
            guard let owner = entry.dropFirst(prefix.count).split(separator: "-").first.flatMap({ pid_t($0) }),
                owner != getpid(), kill(owner, 0) != 0, errno == ESRCH
            else { continue }
            let directory = URL(fileURLWithPath: "/tmp/\(entry)")
            removeSharedMemory(of: directory.appendingPathComponent("data"))
            try? FileManager.default.removeItem(at: directory)
        }
    }

    /// Removes the segment named on line 7 of the dead server's postmaster.pid ("key id") when
    /// it still has that key and nothing is attached to it.
    private static func removeSharedMemory(of data: URL) {
        guard let pidFile = try? String(contentsOf: data.appendingPathComponent("postmaster.pid"), encoding: .utf8)
        else { return }
        let lines = pidFile.split(separator: "\n", omittingEmptySubsequences: false)
        guard lines.count > 6 else { return }
        let fields = lines[6].split(separator: " ")
        guard fields.count == 2, let key = Int32(fields[0]), let id = Int32(fields[1]) else { return }
        var info = shmid_ds()
        guard shmctl(id, IPC_STAT, &info) == 0, info.shm_perm.__key == key, info.shm_nattch == 0 else { return }
        _ = shmctl(id, IPC_RMID, nil)
    }
}
