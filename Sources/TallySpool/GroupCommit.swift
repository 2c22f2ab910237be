/// When the spool's written appends must be fsynced: the group-commit rule of
/// ``SpoolIOThread``, as a pure value (times are monotonic nanoseconds the caller reads).
///
/// - `always`: whatever is pending is due (synced after the round of jobs that wrote it; appends
///   that arrive during an fsync share the next one).
/// - `interval(d)`: a sync is due once the first pending append was written and `d` has passed
///   since the previous sync — so at most one fsync per `d`, and none later than needed when the
///   disk was idle (the first append after a quiet spell is synced at once).
/// - `never`: appends complete without a sync.
struct GroupCommit {
    let policy: FsyncPolicy
    /// When the oldest append still waiting for a sync was written.
    private(set) var firstPendingAt: UInt64?
    /// When the last sync of appends completed.
    private(set) var lastSyncAt: UInt64?

    init(policy: FsyncPolicy) { self.policy = policy }

    /// Whether an append completes as soon as it is written.
    var completesWithoutSync: Bool { policy == .never }

    var hasPending: Bool { firstPendingAt != nil }

    /// An append was written at `now` and waits for a sync.
    mutating func appended(at now: UInt64) {
        if firstPendingAt == nil { firstPendingAt = now }
    }

    /// The pending appends were synced, the sync completing at `now`.
    mutating func synced(at now: UInt64) {
        lastSyncAt = now
        firstPendingAt = nil
    }

    /// The pending appends failed (and were completed with the error): nothing waits any more.
    mutating func dropped() { firstPendingAt = nil }

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

    /// Whether a sync is due now. (The I/O thread asks after serving each round of queued jobs,
    /// so with `always` every append written in one round shares one fsync.)
    func isDue(at now: UInt64) -> Bool {
        guard hasPending else { return false }
        switch policy {
        case .never: return false
        case .always: return true
        case .interval: return deadline.map { now >= $0 } ?? false
        }
    }
}
