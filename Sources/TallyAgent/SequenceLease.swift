import NIOPosix
import TallyCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Batch sequence numbers that survive restarts and are never reused (SPEC.md §6).
///
/// The agent leases sequences in blocks: before it hands out sequence `n` it has durably stored a
/// high-water mark above `n` in `shipper.seq` beside the spool's segments (tmp file, fsync,
/// rename, fsync of the directory). After a restart — even after kill -9 — it starts at the
/// stored mark, so a sequence already sent with some events is never sent with others. Gaps are
/// allowed by the protocol. The spool's lock guarantees one writer.
///
/// File: `"TSEQ" | u32 version = 1 | u64 high-water (little-endian) | u32 CRC-32C of bytes 0..<16`.
/// A missing file starts at 1; a damaged one is an error (never guess: a guess could reuse).
struct SequenceLease {
    let path: String
    let directory: String
    let block: UInt64
    private(set) var next: UInt64
    private(set) var leasedUpTo: UInt64

    static let fileName = "shipper.seq"

    /// Reads the stored mark (blocking I/O runs on NIO's thread pool).
    static func open(directory: String, block: UInt64 = 4_096) async throws(ShipperError) -> SequenceLease {
        let path = directory + "/" + fileName
        let result: Result<UInt64, ShipperError>
        do {
            result = try await NIOThreadPool.singleton.runIfActive { Self.readMark(path) }
        } catch {
            throw .sequenceStore(path: path, problem: "\(error)")
        }
        let mark = try result.get()
        return SequenceLease(path: path, directory: directory, block: block, next: mark, leasedUpTo: mark)
    }

    /// The next sequence, extending the durable lease first when it is used up.
    mutating func take() async throws(ShipperError) -> UInt64 {
        if next >= leasedUpTo {
            let mark = next + block
            let path = self.path
            let directory = self.directory
            let result: Result<Void, ShipperError>
            do {
                result = try await NIOThreadPool.singleton.runIfActive { Self.writeMark(mark, path: path, directory: directory) }
            } catch {
                throw .sequenceStore(path: path, problem: "\(error)")
            }
            try result.get()
            leasedUpTo = mark
        }
        defer { next += 1 }
        return next
    }

    static func encode(_ mark: UInt64) -> [UInt8] {
        var bytes: [UInt8] = Array("TSEQ".utf8) + [1, 0, 0, 0]
        for shift in stride(from: 0, to: 64, by: 8) { bytes.append(UInt8(truncatingIfNeeded: mark >> UInt64(shift))) }
        let crc = CRC32C.checksum(bytes)
        for shift in stride(from: 0, to: 32, by: 8) { bytes.append(UInt8(truncatingIfNeeded: crc >> UInt32(shift))) }
        return bytes
    }

    static func decode(_ bytes: [UInt8]) -> UInt64? {
        guard bytes.count == 20, bytes[0..<8].elementsEqual(Array("TSEQ".utf8) + [1, 0, 0, 0]) else { return nil }
        var crc: UInt32 = 0
        for index in 0..<4 { crc |= UInt32(bytes[16 + index]) << UInt32(8 * index) }
        guard CRC32C.checksum(bytes[0..<16]) == crc else { return nil }
        var mark: UInt64 = 0
        for index in 0..<8 { mark |= UInt64(bytes[8 + index]) << UInt64(8 * index) }
        return mark
    }

    private static func readMark(_ path: String) -> Result<UInt64, ShipperError> {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            if errno == ENOENT { return .success(1) }
            return .failure(.sequenceStore(path: path, problem: String(cString: strerror(errno))))
        }
        defer { _ = Glibc.close(fd) }
        var bytes = [UInt8](repeating: 0, count: 64)
        let count = bytes.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
        guard count >= 0, let mark = decode(Array(bytes.prefix(count))) else {
            return .failure(.sequenceStore(path: path, problem: "the file is damaged; refusing to guess the next batch sequence (a reused sequence would be refused by the collector). Restore it, or set it above the last sequence the collector holds for this agent"))
        }
        return .success(mark)
    }

    private static func writeMark(_ mark: UInt64, path: String, directory: String) -> Result<Void, ShipperError> {
        let temporary = path + ".tmp"
        func fail(_ what: String) -> Result<Void, ShipperError> {
            .failure(.sequenceStore(path: path, problem: "\(what): \(String(cString: strerror(errno)))"))
        }
        let fd = Glibc.open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return fail("open") }
        let bytes = encode(mark)
        let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        guard written == bytes.count, fsync(fd) == 0 else {
            _ = Glibc.close(fd)
            return fail("write")
        }
        _ = Glibc.close(fd)
        guard rename(temporary, path) == 0 else { return fail("rename") }
        let directoryFd = Glibc.open(directory, O_RDONLY | O_CLOEXEC)
        guard directoryFd >= 0 else { return fail("open directory") }
        defer { _ = Glibc.close(directoryFd) }
        guard fsync(directoryFd) == 0 else { return fail("fsync directory") }
        return .success(())
    }
}

/// Why the shipper stopped or could not start.
public enum ShipperError: Error, Sendable, CustomStringConvertible {
    /// The durable batch sequence could not be read or stored.
    case sequenceStore(path: String, problem: String)
    /// The spool failed.
    case spool(String)
    /// A batch could not be encoded.
    case encoding(String)

    public var description: String {
        switch self {
        case .sequenceStore(let path, let problem): "batch sequence store \(path): \(problem)"
        case .spool(let problem): "spool: \(problem)"
        case .encoding(let problem): "batch encoding: \(problem)"
        }
    }
}
