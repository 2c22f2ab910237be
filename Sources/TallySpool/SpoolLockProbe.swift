#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension Spool {
    /// Whether a process (normally `tally-agent`) holds the spool's exclusive lock. Asks without
    /// taking the lock where the system allows it (Linux: `/proc/locks`), so that a look never
    /// makes an agent starting at that instant fail to lock its spool; elsewhere it tries a
    /// shared lock for an instant. Changes nothing in the directory (creates no `LOCK`).
    public static func isLocked(directory: String) -> Bool {
        let path = directory + "/" + SpoolStore.lockName
        var info = stat()
        guard stat(path, &info) == 0 else { return false }
        if let held = heldInProcLocks(device: UInt64(info.st_dev), inode: UInt64(info.st_ino)) { return held }
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { Glibc.close(fd) }
        if flock(fd, LOCK_SH | LOCK_NB) == 0 {
            _ = flock(fd, LOCK_UN)
            return false
        }
        return errno == EWOULDBLOCK
    }

    /// Looks for a `FLOCK` on the file in `/proc/locks` (`... FLOCK ADVISORY WRITE pid MAJ:MIN:INODE ...`,
    /// device numbers in hex); nil when the table cannot be read.
    private static func heldInProcLocks(device: UInt64, inode: UInt64) -> Bool? {
        #if os(Linux)
        guard let file = fopen("/proc/locks", "r") else { return nil }
        defer { fclose(file) }
        let major = ((device >> 8) & 0xfff) | ((device >> 32) & ~UInt64(0xfff))
        let minor = (device & 0xff) | ((device >> 12) & ~UInt64(0xff))
        var line: UnsafeMutablePointer<CChar>?
        var capacity = 0
        defer { free(line) }
        while getline(&line, &capacity, file) > 0 {
            guard let line else { break }
            let fields = String(cString: line).split(whereSeparator: { $0 == " " || $0 == "\n" })
            guard fields.contains("FLOCK"), !fields.contains("->") else { continue }
            for field in fields {
                let parts = field.split(separator: ":")
                if parts.count == 3, UInt64(parts[0], radix: 16) == major, UInt64(parts[1], radix: 16) == minor,
                    UInt64(parts[2]) == inode
                {
                    return true
                }
            }
        }
        return false
        #else
        return nil
        #endif
    }
}
