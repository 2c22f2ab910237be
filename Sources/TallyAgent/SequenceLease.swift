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
/// high-water mark above `n` in `shipper.seq` beside the spool's segments. After a restart —
/// even after kill -9 — it starts at the stored mark, so a sequence already sent with some
/// events is never sent with others. Gaps are allowed by the protocol. The spool's lock
/// guarantees one writer.
///
/// File: two 20-byte slots, each `"TSEQ" | u32 version = 1 | u64 high-water (little-endian) |
/// u32 CRC-32C of the slot's bytes 0..<16`; the greater valid mark counts. An update writes the
/// slot without the greater mark in place and fsyncs it, so extending a lease needs no new disk
/// space (a full disk does not stop shipping) and a torn write leaves the other slot intact. A
/// 20-byte file (earlier versions) is slot 0 alone.
///
/// A file that is missing beside a spool that was used before, or that has no valid slot, is
/// never guessed from: the lease continues from the current time in microseconds since the
/// epoch, which is above every mark the agent could have stored (marks grow by one per batch
/// and by whole blocks, far slower than the clock), and says so in ``recovered``.
struct SequenceLease {
    let path: String
    let block: UInt64
    private(set) var next: UInt64
    private(set) var leasedUpTo: UInt64
    /// Why the stored mark could not be used, when it could not.
    let recovered: String?
    private var newestSlot: Int

    static let fileName = "shipper.seq"
    static let slotBytes = 20

    typealias FileState = SequenceFileState

    /// Reads the stored mark (blocking I/O runs on NIO's thread pool). `spoolWasUsed` tells a
    /// missing file on a fresh spool (start at 1) from a deleted one.
    static func open(directory: String, spoolWasUsed: Bool, block: UInt64 = 4_096) async throws(ShipperError) -> SequenceLease {
        let path = directory + "/" + fileName
        let stored: (state: FileState, slot: Int)
        do {
            stored = try await NIOThreadPool.singleton.runIfActive { Self.read(path) }
        } catch {
            throw .sequenceStore(path: path, problem: "\(error)")
        }
        let timeMark = UInt64(max(1, EventTime.now().microseconds))
        switch stored.state {
        case .valid(let mark):
            return SequenceLease(path: path, block: block, next: mark, leasedUpTo: mark, recovered: nil, newestSlot: stored.slot)
        case .missing where !spoolWasUsed:
            return SequenceLease(path: path, block: block, next: 1, leasedUpTo: 1, recovered: nil, newestSlot: 1)
        case .missing:
            return SequenceLease(
                path: path, block: block, next: timeMark, leasedUpTo: timeMark,
                recovered: "\(path) is missing beside a spool that was used; continuing from the time-based sequence \(timeMark)",
                newestSlot: 1)
        case .damaged:
            return SequenceLease(
                path: path, block: block, next: timeMark, leasedUpTo: timeMark,
                recovered: "\(path) is damaged; continuing from the time-based sequence \(timeMark)", newestSlot: 1)
        }
    }

    private init(path: String, block: UInt64, next: UInt64, leasedUpTo: UInt64, recovered: String?, newestSlot: Int) {
        self.path = path
        self.block = block
        self.next = next
        self.leasedUpTo = leasedUpTo
        self.recovered = recovered
        self.newestSlot = newestSlot
    }

    /// The next sequence, extending the durable lease first when it is used up. On failure
    /// nothing is handed out and the lease is unchanged: the caller retries later.
    mutating func take() async throws(ShipperError) -> UInt64 {
        if next >= leasedUpTo {
            let mark = next + block
            let path = self.path
            let slot = 1 - newestSlot
            let result: Result<Void, ShipperError>
            do {
                result = try await NIOThreadPool.singleton.runIfActive { Self.write(mark, slot: slot, path: path) }
            } catch {
                throw .sequenceStore(path: path, problem: "\(error)")
            }
            try result.get()
            leasedUpTo = mark
            newestSlot = slot
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

    static func decode(_ bytes: ArraySlice<UInt8>) -> UInt64? {
        let bytes = Array(bytes)
        guard bytes.count == slotBytes, bytes[0..<8].elementsEqual(Array("TSEQ".utf8) + [1, 0, 0, 0]) else { return nil }
        var crc: UInt32 = 0
        for index in 0..<4 { crc |= UInt32(bytes[16 + index]) << UInt32(8 * index) }
        guard CRC32C.checksum(bytes[0..<16]) == crc else { return nil }
        var mark: UInt64 = 0
        for index in 0..<8 { mark |= UInt64(bytes[8 + index]) << UInt64(8 * index) }
        return mark
    }

    fileprivate static func read(_ path: String) -> (state: FileState, slot: Int) {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { return (errno == ENOENT ? .missing : .damaged, 1) }
        defer { _ = Glibc.close(fd) }
        var bytes = [UInt8](repeating: 0, count: 2 * slotBytes + 1)
        let count = bytes.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
        guard count >= 0 else { return (.damaged, 1) }
        var best: (mark: UInt64, slot: Int)?
        for slot in 0..<2 where count >= (slot + 1) * slotBytes {
            guard let mark = decode(bytes[(slot * slotBytes)..<((slot + 1) * slotBytes)]) else { continue }
            if mark > (best?.mark ?? 0) || best == nil { best = (mark, slot) }
        }
        guard let best else { return (.damaged, 1) }
        return (.valid(mark: best.mark), best.slot)
    }

    private static func write(_ mark: UInt64, slot: Int, path: String) -> Result<Void, ShipperError> {
        func fail(_ what: String) -> Result<Void, ShipperError> {
            .failure(.sequenceStore(path: path, problem: "\(what): \(String(cString: strerror(errno)))"))
        }
        // Created (with its directory entry made durable) the first time only; later updates
        // overwrite a slot in place.
        let existed = access(path, F_OK) == 0
        let fd = Glibc.open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return fail("open") }
        defer { _ = Glibc.close(fd) }
        let bytes = encode(mark)
        let written = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(slot * slotBytes)) }
        guard written == bytes.count else { return fail("write") }
        guard fsync(fd) == 0 else { return fail("fsync") }
        if !existed {
            let directory = String(path.prefix(upTo: path.lastIndex(of: "/") ?? path.startIndex))
            let directoryFd = Glibc.open(directory.isEmpty ? "." : directory, O_RDONLY | O_CLOEXEC)
            guard directoryFd >= 0 else { return fail("open directory") }
            defer { _ = Glibc.close(directoryFd) }
            guard fsync(directoryFd) == 0 else { return fail("fsync directory") }
        }
        return .success(())
    }
}

/// What a spool's `shipper.seq` holds, for `tallyctl spool verify`.
public enum SequenceFileState: Sendable, Hashable {
    case missing
    case valid(mark: UInt64)
    case damaged

    /// Reads `shipper.seq` in the spool directory (blocking; changes nothing).
    public static func inspect(spoolDirectory: String) -> SequenceFileState {
        SequenceLease.read(spoolDirectory + "/" + SequenceLease.fileName).state
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
