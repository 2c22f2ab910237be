import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// What one local HTTP client may hold of the agent: time and memory. A client that breaks a
/// limit is refused or disconnected; the others are unaffected.
public struct HTTPLimits: Sendable, Hashable {
    /// A request's head must be complete this long after its first byte arrived.
    public var headerTimeout: Duration = .seconds(10)
    /// A request's body must be complete this long after its head.
    public var bodyTimeout: Duration = .seconds(30)
    /// A keep-alive connection with no request begun is closed after this long.
    public var idleTimeout: Duration = .seconds(60)
    /// The most open connections; one more gets `503` with `Retry-After` and is closed.
    public var maxConnections = 512
    /// The most request-body bytes buffered across all connections at once; a body that would
    /// pass it gets `503` with `Retry-After` (nothing of it kept) and its connection closes.
    public var maxBodyBytesInFlight = 64 << 20

    public init() {}

    /// How often a connection's deadlines are checked: a quarter of the shortest, at most 1 s.
    var checkInterval: Duration { min(.seconds(1), min(headerTimeout, bodyTimeout, idleTimeout) / 4) }
}

/// The deadlines of one HTTP connection, as a value-type machine fed with what happens on it.
///
/// - idle (no request begun): closes after `idleTimeout`;
/// - head (bytes of a request arrived, its head not yet parsed): after `headerTimeout`;
/// - body (head parsed, body not complete): after `bodyTimeout`;
/// - answering (the request is complete, its answer not yet written): no deadline, because the
///   agent itself is the one that is slow (the spool's fsync).
struct HTTPConnectionClock: Sendable, Hashable {
    enum Phase: String, Sendable, Hashable {
        case idle, head, body, answering
    }

    let limits: HTTPLimits
    private(set) var phase = Phase.idle
    private(set) var deadline: ContinuousClock.Instant?

    init(limits: HTTPLimits, now: ContinuousClock.Instant) {
        self.limits = limits
        deadline = now + limits.idleTimeout
    }

    /// Bytes arrived from the client.
    mutating func bytesArrived(now: ContinuousClock.Instant) {
        guard phase == .idle else { return }
        phase = .head
        deadline = now + limits.headerTimeout
    }

    /// The request's head was parsed.
    mutating func headReceived(now: ContinuousClock.Instant) {
        phase = .body
        deadline = now + limits.bodyTimeout
    }

    /// The request's body is complete: the agent answers it.
    mutating func requestComplete() {
        phase = .answering
        deadline = nil
    }

    /// The answer was written; the connection waits for the next request.
    mutating func answered(now: ContinuousClock.Instant) {
        phase = .idle
        deadline = now + limits.idleTimeout
    }

    /// The phase whose deadline has passed, if one has.
    func expired(now: ContinuousClock.Instant) -> Phase? {
        guard let deadline, now >= deadline else { return nil }
        return phase
    }
}

/// Admission to the HTTP server, shared by all its connections: the connection count and the
/// body bytes buffered in flight. Returns memory to the system once a large load has passed.
final class HTTPAdmission: Sendable {
    private struct State {
        var connections = 0
        var bodyBytes = 0
        var peakSinceTrim = 0
    }
    private let state = Mutex(State())
    let limits: HTTPLimits

    init(limits: HTTPLimits) { self.limits = limits }

    /// Takes a connection slot; false when the server is at its cap.
    func admitConnection() -> Bool {
        state.withLock { state in
            guard state.connections < limits.maxConnections else { return false }
            state.connections += 1
            return true
        }
    }

    func releaseConnection() { state.withLock { $0.connections -= 1 } }

    var connections: Int { state.withLock { $0.connections } }
    var bodyBytesInFlight: Int { state.withLock { $0.bodyBytes } }

    /// Reserves `bytes` of body memory; false (nothing reserved) past the budget.
    func reserveBody(_ bytes: Int) -> Bool {
        state.withLock { state in
            guard state.bodyBytes + bytes <= limits.maxBodyBytesInFlight else { return false }
            state.bodyBytes += bytes
            state.peakSinceTrim = max(state.peakSinceTrim, state.bodyBytes)
            return true
        }
    }

    /// Gives back body memory. When nothing is in flight any more after a peak of 8 MiB or more,
    /// the allocator is asked to return its free pages to the system (glibc keeps freed memory
    /// of many threads' arenas otherwise: 60 slow 8 MiB bodies left 363 MB held).
    func releaseBody(_ bytes: Int) {
        guard bytes > 0 else { return }
        let trim = state.withLock { state -> Bool in
            state.bodyBytes -= bytes
            guard state.bodyBytes == 0, state.peakSinceTrim >= 8 << 20 else { return false }
            state.peakSinceTrim = 0
            return true
        }
        guard trim else { return }
        Self.returnFreeMemory()
        // Buffers of the connections just closed are freed a moment later (when their channels
        // are torn down): trim once more then.
        Task {
            try? await Task.sleep(for: .seconds(1))
            Self.returnFreeMemory()
        }
    }

    /// glibc's `malloc_trim(0)`, looked up at run time: Swift's Glibc module does not import
    /// `<malloc.h>`, and a C target for one call is more than it is worth. A no-op elsewhere.
    private static func returnFreeMemory() {
        #if canImport(Glibc)
        typealias Trim = @convention(c) (Int) -> Int32
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "malloc_trim") else { return }
        _ = unsafeBitCast(symbol, to: Trim.self)(0)
        #endif
    }
}
