#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// A test-only fault: with `TALLY_FAULT_CLOCK_FILE=PATH` in its environment, a process's wall
/// clock (``EventTime/now()``, which every time decision of Tally reads) runs off by the signed
/// number of seconds written in that file (`-600`, `+120`, `0`), re-read at most every 100 ms,
/// so that a test can step it while the process runs — as an NTP step or a VM resumed with a
/// stale clock does. The chaos suite skews agents with it. Without the variable nothing is read
/// and the clock is the system's.
///
/// Why not libfaketime, which needs no seam: preloaded into the agent it also rewrites the
/// waits on the monotonic clock (a `pthread_cond_timedwait` on `CLOCK_MONOTONIC` returns at
/// once, whatever the offset) and stalled the agent's timers for minutes — failures of the
/// tool, not of a machine whose clock steps.
public final class ClockFault: Sendable {
    let path: String
    private let refreshNanoseconds: UInt64
    private let offsetMicroseconds = Atomic<Int64>(0)
    /// `CLOCK_MONOTONIC` of the last read; 0 before the first.
    private let readAt = Atomic<UInt64>(0)

    /// The process's fault, when its environment asks for one.
    static let process: ClockFault? = getenv("TALLY_FAULT_CLOCK_FILE").map { ClockFault(path: String(cString: $0)) }

    /// `refresh`: how old the last read may be before the file is read again.
    public init(path: String, refresh: Duration = .milliseconds(100)) {
        self.path = path
        refreshNanoseconds = UInt64(refresh.microseconds) * 1_000
    }

    /// The current offset in microseconds: the file's, or the last one read when the file is
    /// missing or unreadable (0 if it never was readable).
    public func offset() -> Int64 {
        let now = Self.monotonicNanoseconds()
        let last = readAt.load(ordering: .acquiring)
        if last == 0 || now &- last >= refreshNanoseconds,
            readAt.compareExchange(expected: last, desired: now, ordering: .acquiringAndReleasing).exchanged
        {
            if let seconds = readSeconds() { offsetMicroseconds.store(seconds * 1_000_000, ordering: .releasing) }
        }
        return offsetMicroseconds.load(ordering: .acquiring)
    }

    private func readSeconds() -> Int64? {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        var bytes = [UInt8](repeating: 0, count: 32)
        let count = bytes.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
        guard count > 0 else { return nil }
        let text = String(decoding: bytes[0..<count], as: UTF8.self).filter { !$0.isWhitespace }
        guard let seconds = Int64(text), abs(seconds) <= 100 * 365 * 86_400 else { return nil }
        return seconds
    }

    private static func monotonicNanoseconds() -> UInt64 {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return UInt64(spec.tv_sec) &* 1_000_000_000 &+ UInt64(spec.tv_nsec)
    }
}
