/// Reconnect delays: exponential backoff with full jitter (a uniformly random delay between
/// zero and `initial * 2^attempt`, capped at `maximum`), so that many agents cut off by the same
/// outage do not reconnect in lockstep.
struct Backoff {
    let initial: Duration
    let maximum: Duration
    private(set) var attempt = 0

    init(initial: Duration, maximum: Duration) {
        self.initial = initial
        self.maximum = max(initial, maximum)
    }

    /// The cap for the current attempt (before jitter).
    var ceiling: Duration {
        var cap = initial
        var remaining = attempt
        while remaining > 0 && cap < maximum {
            cap = cap * 2
            remaining -= 1
        }
        return min(cap, maximum)
    }

    mutating func next<R: RandomNumberGenerator>(using generator: inout R) -> Duration {
        let cap = ceiling
        attempt += 1
        let capNanos = cap.nanoseconds
        guard capNanos > 0 else { return .zero }
        return .nanoseconds(Int64.random(in: 0...capNanos, using: &generator))
    }

    mutating func next() -> Duration {
        var generator = SystemRandomNumberGenerator()
        return next(using: &generator)
    }

    mutating func reset() { attempt = 0 }
}
