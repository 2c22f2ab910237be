#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Why a spool operation failed. Every case carries enough to say what happened in one line;
/// none of them means that an event the spool acknowledged was lost.
public enum SpoolError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The spool is at its size limit (or the disk is full). Nothing of this append was kept;
    /// retry after the given delay (the HTTP layer answers 503 with `Retry-After`).
    case full(retryAfter: Duration)
    /// The spool is at its size limit and its policy is ``SpoolFullPolicy/rejectNew``: nothing of
    /// this append was kept, and the caller should not expect space soon.
    case rejectedFull
    /// Another process (or another open in this one) holds the spool's lock.
    case locked(directory: String)
    /// The spool was opened read-only and the operation would change it.
    case readOnly
    /// The spool has been closed.
    case closed
    /// A position that does not belong to this spool's records (e.g. past the end).
    case invalidPosition(SpoolPosition, reason: String)
    /// An event too large for one spool record.
    case recordTooLarge(bytes: Int, limit: Int)
    /// A system call failed.
    case io(operation: String, path: String, errno: Int32)
    /// A segment written in a newer format than this version reads (a later agent wrote the
    /// spool). Nothing was changed: its events wait for an agent that can read them.
    case unsupportedFormat(path: String, version: UInt8, supported: UInt8)

    public var description: String {
        switch self {
        case .full(let retryAfter):
            "the spool is full; retry after \(retryAfter.microseconds / 1_000) ms"
        case .rejectedFull: "the spool is full and rejects new events (policy rejectNew)"
        case .locked(let directory):
            "the spool at \(directory) is locked by another process (is tally-agent running? open it read-only to inspect it)"
        case .readOnly: "the spool is open read-only"
        case .closed: "the spool is closed"
        case .invalidPosition(let position, let reason): "invalid spool position \(position): \(reason)"
        case .recordTooLarge(let bytes, let limit): "an event of \(bytes) bytes exceeds the spool record limit of \(limit) bytes"
        case .io(let operation, let path, let code):
            "\(operation) \(path) failed: \(String(cString: strerror(code))) (errno \(code))"
        case .unsupportedFormat(let path, let version, let supported):
            "\(path) is in spool format version \(version), and this version of Tally reads version \(supported): it was left unchanged; run the tally-agent that wrote it (or a later one) to ship its events"
        }
    }

    /// Whether this is the spool refusing an append for space (either policy).
    public var isFull: Bool {
        switch self {
        case .full, .rejectedFull: true
        default: false
        }
    }

    /// Whether this error is the disk running out of space (ENOSPC / EDQUOT).
    var isOutOfSpace: Bool {
        if case .io(_, _, let code) = self { return code == ENOSPC || code == EDQUOT }
        return false
    }
}

/// Why a record's payload could not be decoded into a ``UsageEvent``.
public struct SpoolDecodingError: Error, Sendable, Hashable, CustomStringConvertible {
    public let problem: String
    public init(_ problem: String) { self.problem = problem }
    public var description: String { "undecodable spool record: \(problem)" }
}
