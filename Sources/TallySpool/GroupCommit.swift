/// When the spool's written appends must be fsynced: the group-commit rule of
/// ``SpoolIOThread``, as a pure value (times are monotonic nanoseconds the caller reads).
///
/// - `always`: whatever is pending is due (synced after the round of jobs that wrote it; appends
///   that arrive during an fsync share the next one).
/// - `interval(d)`: a sync is due once the first pending append was written and `d` has passed
///   since the previous sync — so at most one fsync per `d`, and none later than needed when the
///   disk was idle (the first append after a quiet spell is synced at once). Sooner when waiting
///   cannot gather more: some pending append has a caller waiting on it (an HTTP request) and
///   no such caller is on its way (`arriving`: requests read but not yet appended). Then every
///   waiting caller is already covered, and the window would only delay them — with 8 keep-alive
///   connections, each would wait the whole window for nothing. Streams that do not wait (the
///   Unix socket) and busy servers (requests always on their way) keep the window's one fsync per
///   `d`. The idea is PostgreSQL's `commit_delay`, which waits only while `commit_siblings`
///   other transactions are active.
/// - `never`: appends complete without a sync.
struct GroupCommit {
    let policy: FsyncPolicy
    /// When the oldest append still waiting for a sync was written.
    private(set) var firstPendingAt: UInt64?
    /// When the last sync of appends completed.
    private(set) var lastSyncAt: UInt64?
    /// Pending appends that a caller waits on (see ``appended(at:awaited:)``).
    private(set) var awaitedPending = 0

    init(policy: FsyncPolicy) { self.policy = policy }

    /// Whether an append completes as soon as it is written.
    var completesWithoutSync: Bool { policy == .never }

    var hasPending: Bool { firstPendingAt != nil }

    /// An append was written at `now` and waits for a sync; `awaited` when its caller waits for
    /// the answer before sending more (an HTTP request), not a stream that goes on meanwhile.
    mutating func appended(at now: UInt64, awaited: Bool = false) {
        if firstPendingAt == nil { firstPendingAt = now }
        if awaited { awaitedPending += 1 }
    }

    /// The pending appends were synced, the sync completing at `now`.
    mutating func synced(at now: UInt64) {
        lastSyncAt = now
        firstPendingAt = nil
        awaitedPending = 0
    }

    /// The pending appends failed (and were completed with the error): nothing waits any more.
    mutating func dropped() {
        firstPendingAt = nil
        awaitedPending = 0
    }

    /// When the pending appends must be synced, for `interval`; nil when nothing is pending or
    /// the policy does not wait on time.
    var deadline: UInt64? {
        guard case .interval(let interval) = policy, let first = firstPendingAt else { return nil }
        guard let last = lastSyncAt else { return first }
        let nanos =
            UInt64(clamping: interval.components.seconds) &* 1_000_000_000
            &+ UInt64(clamping: interval.components.attoseconds / 1_000_000_000)
        return max(first, last &+ nanos)
    }

    /// Whether a sync is due now, with `arriving` awaited appends on their way (read by a server,
    /// not yet queued). (The I/O thread asks after serving each round of queued jobs, so with
    /// `always` every append written in one round shares one fsync.)
    func isDue(at now: UInt64, arriving: Int = 0) -> Bool {
        guard hasPending else { return false }
        switch policy {
        case .never: return false
        case .always: return true
        case .interval:
            if awaitedPending > 0 && arriving == 0 { return true }
            return deadline.map { now >= $0 } ?? false
        }
    }
}
