#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The space of the filesystem that holds a path, as `statvfs(3)` reports it: the bytes an
/// unprivileged process may still write there and the filesystem's size. The agent exports it
/// for its spool and the collector for an embedded ledger, so that a disk can be seen filling
/// before writes fail.
package struct FilesystemSpace: Sendable, Hashable {
    /// Bytes available to an unprivileged writer (`f_bavail`, without the root reserve).
    package var availableBytes: Int64
    /// The filesystem's size in bytes (`f_blocks`).
    package var sizeBytes: Int64

    package init(availableBytes: Int64, sizeBytes: Int64) {
        self.availableBytes = availableBytes
        self.sizeBytes = sizeBytes
    }

    /// The space of the filesystem holding `path`; nil when it cannot be read (no such path).
    package static func of(path: String) -> FilesystemSpace? {
        var info = statvfs()
        guard statvfs(path, &info) == 0 else { return nil }
        let unit = UInt64(info.f_frsize)
        return FilesystemSpace(availableBytes: bytes(UInt64(info.f_bavail), unit), sizeBytes: bytes(UInt64(info.f_blocks), unit))
    }

    private static func bytes(_ blocks: UInt64, _ unit: UInt64) -> Int64 {
        let (product, overflow) = blocks.multipliedReportingOverflow(by: unit)
        return overflow ? .max : Int64(clamping: product)
    }
}
