#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Dispatch
import Synchronization
import TallyCore
import TallySpool

/// One spool record's payload (``EventRecordCodec``). Checks: a decoded event encodes and
/// decodes back to itself.
public func fuzzSpoolRecord(_ bytes: UnsafeRawBufferPointer) {
    let event: UsageEvent
    do {
        event = try EventRecordCodec.decode(bytes)
    } catch {
        return
    }
    do {
        require(try EventRecordCodec.decode(EventRecordCodec.encode(event)) == event, "a record's event comes back different")
    } catch {
        finding("a decoded record's event, encoded again, does not decode: \(error)")
    }
}

/// The bytes as the one (active) segment file of a spool, opened — recovered — by the real
/// `Spool.open`, then read to the end and verified; then the same with each record's CRC32C
/// made right, as far as the record lengths chain (a fuzzer cannot forge checksums, and would
/// otherwise never reach the payloads). Checks: verify counts exactly the events read; an open
/// after the repair reads the same events, with no torn tail or bad header left; the repaired
/// spool takes an append and reads it back after them.
public func fuzzSpoolRecovery(_ bytes: UnsafeRawBufferPointer) {
    // One scratch spool per process: callers on several threads (the corpus replay) take turns.
    SpoolScratch.turn.withLock { _ in
        recover(bytes)
        var fixed = Array(bytes)
        if fixRecordChecksums(&fixed) { fixed.withUnsafeBytes { recover($0) } }
    }
}

/// Rewrites the CRC of each record after the 16-byte segment header whose length is plausible
/// and fits the bytes (FORMAT.md: `u32 length | u32 crc | payload`, little-endian, the CRC over
/// the length bytes and the payload); true when anything changed.
private func fixRecordChecksums(_ bytes: inout [UInt8]) -> Bool {
    var changed = false
    var start = 16
    while start + 8 <= bytes.count {
        let length = (0..<4).reduce(0) { $0 | Int(bytes[start + $1]) << (8 * $1) }
        guard length > 0, length <= 256 << 10, start + 8 + length <= bytes.count else { break }
        var crc = CRC32C()
        bytes.withUnsafeBytes { raw in
            crc.update(UnsafeRawBufferPointer(rebasing: raw[start..<(start + 4)]))
            crc.update(UnsafeRawBufferPointer(rebasing: raw[(start + 8)..<(start + 8 + length)]))
        }
        for index in 0..<4 {
            let byte = UInt8(truncatingIfNeeded: crc.value >> (8 * index))
            if bytes[start + 4 + index] != byte {
                bytes[start + 4 + index] = byte
                changed = true
            }
        }
        start += 8 + length
    }
    return changed
}

private func recover(_ bytes: UnsafeRawBufferPointer) {
    let directory = SpoolScratch.directory + "/spool"
    SpoolScratch.empty(directory)
    let ops = UnsyncedFileOperations()
    do {
        try ops.makeDirectory(directory)
        let path = directory + "/segment-00000000000000000001.tsp"
        let fd = try ops.open(path, create: true, readOnly: false)
        defer { ops.close(fd) }
        try ops.write(fd, bytes, at: 0, path: path)
    } catch {
        fatalError("cannot write the segment file: \(error)")
    }
    if let problem = SpoolScratch.blocking({ await recoverAndCheck(directory, ops: ops) }) { finding(problem) }
}

/// nil when every check holds; what broke otherwise. Errors thrown by the spool are answers.
private func recoverAndCheck(_ directory: String, ops: UnsyncedFileOperations) async -> String? {
    var options = SpoolOptions()
    options.fsync = .never
    let first: [UsageEvent]
    do {
        let spool = try await Spool.open(directory: directory, options: options, fileOperations: ops)
        let read: (events: [UsageEvent], verification: SpoolVerification)?
        do { read = (try await readAll(spool), try await spool.verify()) } catch { read = nil }
        await spool.close()
        guard let (events, verification) = read else { return nil }
        if verification.records != events.count { return "verify counts \(verification.records) records, reading gave \(events.count) events" }
        first = events
    } catch {
        return nil
    }
    let probe = UsageEvent(
        tenant: "fuzz", metric: "probe", quantity: Quantity(nanos: 1), timestamp: EventTime(microseconds: 1_776_081_600_000_000))
    do {
        let spool = try await Spool.open(directory: directory, options: options, fileOperations: ops)
        let kinds = spool.recovery.problems.map(\.kind)
        let read: (again: [UsageEvent], appended: [UsageEvent])?
        do {
            let again = try await readAll(spool)
            try await spool.append([probe])
            read = (again, try await readAll(spool))
        } catch {
            read = nil
        }
        await spool.close()
        if kinds.contains(.tornTail) || kinds.contains(.badSegmentHeader) { return "the repaired spool still has problems: \(kinds)" }
        guard let (again, appended) = read else { return nil }
        if again != first { return "reopening reads \(again.count) events, the first open read \(first.count)" }
        if appended != first + [probe] { return "an event appended after recovery does not read back after the \(first.count) others" }
    } catch {
        return nil
    }
    return nil
}

/// Every unacknowledged event, oldest first.
private func readAll(_ spool: Spool) async throws(SpoolError) -> [UsageEvent] {
    var events: [UsageEvent] = []
    var batch = try await spool.readFromAcknowledged()
    while !batch.events.isEmpty {
        events += batch.events
        batch = try await spool.read(from: batch.end)
    }
    return events
}

/// The real file system without fsync: the fuzzer checks logic, not durability, and an fsync
/// per input would cut its speed a hundredfold.
private struct UnsyncedFileOperations: SpoolFileOperations {
    let posix = PosixFileOperations()

    func open(_ path: String, create: Bool, readOnly: Bool) throws(SpoolError) -> Int32 {
        try posix.open(path, create: create, readOnly: readOnly)
    }
    func close(_ fd: Int32) { posix.close(fd) }
    func write(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, at offset: Int64, path: String) throws(SpoolError) {
        try posix.write(fd, bytes, at: offset, path: path)
    }
    func read(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, at offset: Int64, path: String) throws(SpoolError) -> Int {
        try posix.read(fd, into: buffer, at: offset, path: path)
    }
    func sync(_ fd: Int32, path: String) throws(SpoolError) {}
    func truncate(_ fd: Int32, to size: Int64, path: String) throws(SpoolError) { try posix.truncate(fd, to: size, path: path) }
    func size(_ fd: Int32, path: String) throws(SpoolError) -> Int64 { try posix.size(fd, path: path) }
    func rename(_ from: String, to: String) throws(SpoolError) { try posix.rename(from, to: to) }
    func remove(_ path: String) throws(SpoolError) { try posix.remove(path) }
    func list(_ directory: String) throws(SpoolError) -> [String] { try posix.list(directory) }
    func makeDirectory(_ path: String) throws(SpoolError) { try posix.makeDirectory(path) }
    func lock(_ fd: Int32, path: String) throws(SpoolError) -> Bool { try posix.lock(fd, path: path) }
}

/// The process's scratch directory (removed at exit) and the bridge from the fuzzer's
/// synchronous call into the spool's async API.
private enum SpoolScratch {
    static let turn = Mutex(())

    static let directory: String = {
        let base = getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp"
        var template = Array("\(base)/tally-fuzz-spool-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { buffer -> UnsafeMutablePointer<CChar>? in
            guard let start = buffer.baseAddress else { return nil }
            return mkdtemp(start)
        }
        guard let made else {
            fatalError("cannot make a scratch directory under \(base)")
        }
        let path = String(cString: made)
        atexit { SpoolScratch.remove() }
        return path
    }()

    /// Deletes the files of `path` (a spool directory holds no subdirectories).
    static func empty(_ path: String) {
        let ops = PosixFileOperations()
        for name in (try? ops.list(path)) ?? [] { try? ops.remove(path + "/" + name) }
    }

    static func remove() {
        empty(directory + "/spool")
        rmdir(directory + "/spool")
        rmdir(directory)
    }

    static func blocking<T: Sendable>(_ body: @escaping @Sendable () async -> T) -> T {
        let done = DispatchSemaphore(value: 0)
        let box = Box<T>()
        Task {
            let value = await body()
            box.value.withLock { $0 = value }
            done.signal()
        }
        done.wait()
        guard let value = box.value.withLock({ $0 }) else { fatalError("the task ended without a value") }
        return value
    }

    private final class Box<T: Sendable>: Sendable {
        let value = Mutex<T?>(nil)
    }
}
