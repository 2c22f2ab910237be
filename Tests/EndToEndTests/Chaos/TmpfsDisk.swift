import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A tmpfs the test mounts (as root, as CI runs; `DiskFullTests` does the same) that a chaos run
/// makes full and gives space again: it is remounted with its size cut to what it holds now, then
/// back to its own size — a full disk with no filler file and no memory spent on one.
final class TmpfsDisk: Sendable {
    let path: URL
    private let size: String

    static var available: Bool { getuid() == 0 }

    /// Mounts a tmpfs of `size` (e.g. `1g`: memory is used only for what is stored) at `path`.
    init(at path: URL, size: String) throws {
        try FileManager.default.createDirectory(at: path, withIntermediateDirectories: true)
        let mounted = try BinaryRunner.runSystem("/usr/bin/mount", ["-t", "tmpfs", "-o", "size=\(size),mode=0777", "tally-chaos", path.path])
        guard mounted.status == 0 else { throw HarnessError("mount tmpfs at \(path.path): \(mounted.stderr)") }
        self.path = path
        self.size = size
    }

    /// No space left: the size becomes what is used now (retried while the usage moves).
    func fill() throws {
        var last = ""
        for _ in 0..<20 {
            var info = statvfs()
            guard statvfs(path.path, &info) == 0 else { throw HarnessError("statvfs \(path.path): \(String(cString: strerror(errno)))") }
            let used = UInt64(info.f_blocks - info.f_bfree) * UInt64(info.f_frsize)
            let remounted = try remount("size=\(max(used, 4096))")
            if remounted.status == 0 { return }
            last = remounted.stderr
        }
        throw HarnessError("remount \(path.path) full: \(last)")
    }

    /// Space again.
    func free() throws {
        let remounted = try remount("size=\(size)")
        guard remounted.status == 0 else { throw HarnessError("remount \(path.path) to \(size): \(remounted.stderr)") }
    }

    /// Lazily: processes may still hold files there.
    func unmount() {
        _ = try? BinaryRunner.runSystem("/usr/bin/umount", ["-l", path.path])
    }

    private func remount(_ options: String) throws -> BinaryRunner.Outcome {
        try BinaryRunner.runSystem("/usr/bin/mount", ["-o", "remount,\(options)", path.path])
    }
}
