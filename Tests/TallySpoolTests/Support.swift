import Foundation
import Synchronization
import TallyCore
@testable import TallySpool

/// A fresh temporary directory, removed when the value is deinitialised.
final class TemporaryDirectory {
    let path: String
    init() {
        path = NSTemporaryDirectory() + "tally-spool-test-" + UUID().uuidString
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }

    var spool: String { path + "/spool" }

    func segmentFiles() -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: spool)) ?? []).filter { $0.hasPrefix("segment-") && $0.hasSuffix(".tsp") }.sorted()
    }
}

func sampleEvent(_ index: Int) -> UsageEvent {
    UsageEvent(
        tenant: "tenant-\(index % 7)", metric: "api_calls",
        quantity: Quantity(nanos: Int128(index) * 1_000_000_001),
        timestamp: EventTime(microseconds: 1_776_081_600_000_000 + Int64(index) * 1_000),
        id: index % 5 == 0 ? nil : "req-\(index)",
        properties: Properties([("endpoint", "/api/v1/search"), ("region", "eu-\(index % 4)")]))
}

func readBytes(_ path: String) -> [UInt8] {
    (FileManager.default.contents(atPath: path)).map { [UInt8]($0) } ?? []
}

func writeBytes(_ path: String, _ bytes: [UInt8]) {
    _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
}

func options(_ change: (inout SpoolOptions) -> Void = { _ in }) -> SpoolOptions {
    var options = SpoolOptions()
    options.fsync = .never
    change(&options)
    return options
}

/// Reads every unacknowledged event, in chunks.
func readAll(_ spool: Spool, chunk: Int = 100) async throws -> SpoolBatch {
    var all = try await spool.readFromAcknowledged(maxEvents: chunk)
    var next = all
    while !next.events.isEmpty {
        next = try await spool.read(from: next.end, maxEvents: chunk)
        all.events += next.events
        all.positions += next.positions
        all.skippedCorruptRegions += next.skippedCorruptRegions
        all.end = next.end
    }
    return all
}

/// The real file system, with counters and injectable failures.
final class TestFileOperations: SpoolFileOperations {
    struct State {
        var paths: [Int32: String] = [:]
        var writtenEnd: [String: Int64] = [:]
        var durableEnd: [String: Int64] = [:]
        var segmentSyncs = 0
        var failWrites: Int32? = nil
        /// When failing a write, write this many bytes of it first.
        var partialBytes = 0
        var failSyncs: Int32? = nil
        /// Bytes read through `read`, by path.
        var bytesRead: [String: Int] = [:]
        /// A full disk: creating a file and writing past a file's end fail with ENOSPC;
        /// overwriting bytes a file already has works (as on a real file system).
        var diskFull = false
        /// Files whose name ends so are gone when opened (ENOENT), as a segment a running agent
        /// deleted after an ack between a reader's listing and its open.
        var vanished: [String] = []
        /// Lock attempts that found the lock held, and who to tell of each.
        var lockRefusals = 0
        var onLockRefused: (@Sendable () -> Void)? = nil
    }
    let state = Mutex(State())
    let real = PosixFileOperations()

    var segmentSyncs: Int { state.withLock { $0.segmentSyncs } }
    func durableEnd(_ segment: UInt64, in directory: String) -> Int64 {
        state.withLock { $0.durableEnd[directory + "/" + SpoolStore.segmentName(segment)] ?? 0 }
    }

    var diskFull: Bool {
        get { state.withLock { $0.diskFull } }
        set { state.withLock { $0.diskFull = newValue } }
    }

    func open(_ path: String, create: Bool, readOnly: Bool) throws(SpoolError) -> Int32 {
        if state.withLock({ $0.vanished.contains(where: path.hasSuffix) }) { throw .io(operation: "open", path: path, errno: ENOENT) }
        if create, diskFull, !FileManager.default.fileExists(atPath: path) { throw .io(operation: "open", path: path, errno: ENOSPC) }
        let fd = try real.open(path, create: create, readOnly: readOnly)
        state.withLock { $0.paths[fd] = path }
        return fd
    }
    func close(_ fd: Int32) {
        state.withLock { _ = $0.paths.removeValue(forKey: fd) }
        real.close(fd)
    }
    func write(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, at offset: Int64, path: String) throws(SpoolError) {
        if diskFull, offset + Int64(bytes.count) > (try real.size(fd, path: path)) {
            throw .io(operation: "write", path: path, errno: ENOSPC)
        }
        let (failure, partial) = state.withLock { ($0.failWrites, $0.partialBytes) }
        if let failure {
            if partial > 0 { try real.write(fd, UnsafeRawBufferPointer(rebasing: bytes[0..<min(partial, bytes.count)]), at: offset, path: path) }
            throw .io(operation: "write", path: path, errno: failure)
        }
        try real.write(fd, bytes, at: offset, path: path)
        state.withLock { $0.writtenEnd[path] = max($0.writtenEnd[path] ?? 0, offset + Int64(bytes.count)) }
    }
    func read(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, at offset: Int64, path: String) throws(SpoolError) -> Int {
        let count = try real.read(fd, into: buffer, at: offset, path: path)
        state.withLock { $0.bytesRead[path, default: 0] += count }
        return count
    }
    func bytesRead(_ path: String) -> Int { state.withLock { $0.bytesRead[path] ?? 0 } }
    func sync(_ fd: Int32, path: String) throws(SpoolError) {
        let (failure, written) = state.withLock { ($0.failSyncs, $0.writtenEnd[path] ?? 0) }
        if let failure { throw .io(operation: "fsync", path: path, errno: failure) }
        try real.sync(fd, path: path)
        state.withLock {
            $0.durableEnd[path] = max($0.durableEnd[path] ?? 0, written)
            if path.contains("/segment-") { $0.segmentSyncs += 1 }
        }
    }
    func truncate(_ fd: Int32, to size: Int64, path: String) throws(SpoolError) {
        try real.truncate(fd, to: size, path: path)
        state.withLock { $0.writtenEnd[path] = size }
    }
    func size(_ fd: Int32, path: String) throws(SpoolError) -> Int64 { try real.size(fd, path: path) }
    func rename(_ from: String, to: String) throws(SpoolError) { try real.rename(from, to: to) }
    func remove(_ path: String) throws(SpoolError) { try real.remove(path) }
    func list(_ directory: String) throws(SpoolError) -> [String] { try real.list(directory) }
    func makeDirectory(_ path: String) throws(SpoolError) { try real.makeDirectory(path) }
    func lock(_ fd: Int32, path: String) throws(SpoolError) -> Bool {
        let taken = try real.lock(fd, path: path)
        if !taken {
            let tell = state.withLock { state in
                state.lockRefusals += 1
                return state.onLockRefused
            }
            tell?()
        }
        return taken
    }
}
