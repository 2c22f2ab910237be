import Foundation

/// Runs `body`, which blocks its thread (a socket read, a child process's start or end, a
/// semaphore, `tallyctl`), on a thread of its own, and awaits its result.
///
/// Swift's cooperative pool has one thread per core: two on the CI machine, shared by every
/// test of the run. A test that blocks one of them leaves the in-process agents and collectors
/// of all the other tests one thread; a second blocked test leaves them none. Worst is a blocking
/// wait for work that itself needs the pool (an in-process agent's answer): it holds until its
/// own timeout. A CI run on 2026-12-07 stalled for 20 s that way (`readHead` on the pool, waiting
/// for an in-process agent's answer), and four tests bounded by time failed with it.
public func offThePool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try body() }) }.start()
    }
}

/// ``offThePool(_:)`` for work that cannot fail.
public func offThePool<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        Thread { continuation.resume(returning: body()) }.start()
    }
}
