import Synchronization

/// Answers a test server holds back until the test lets them go: a "hanging" peer whose hang
/// ends when the test says, not after a fixed sleep. The client's own timeout is then the only
/// clock that decides, and it can be as long as a loaded machine needs. (A fixed 15 s sleep
/// forced a client timeout well below it, 6 s, and a loaded run once took longer than that to
/// answer a plain request.)
///
/// Call ``releaseAll()`` before the server shuts down (a `defer` inside its test body): a
/// server waits for the handlers still running, and a held one would keep it waiting. After the
/// release, ``hold()`` returns at once.
public final class HeldAnswers: Sendable {
    private let state = Mutex<(released: Bool, waiting: [CheckedContinuation<Void, Never>])>((false, []))

    public init() {}

    /// Returns once ``releaseAll()`` is called (at once if it was).
    public func hold() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let held = state.withLock { state in
                if state.released { return false }
                state.waiting.append(continuation)
                return true
            }
            if !held { continuation.resume() }
        }
    }

    /// Lets every held answer go, and every later one at once.
    public func releaseAll() {
        let waiting = state.withLock { state in
            state.released = true
            defer { state.waiting.removeAll() }
            return state.waiting
        }
        for continuation in waiting { continuation.resume() }
    }
}
