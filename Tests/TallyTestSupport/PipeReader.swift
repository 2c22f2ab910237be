import Foundation

/// Reads a child's output pipe with blocking reads on a thread of its own, instead of
/// `FileHandle.readabilityHandler`.
///
/// A `readabilityHandler` arms a libdispatch read source, and on Linux the teardown of those
/// sources races: with many children starting and ending at once (the test suite runs its
/// suites in parallel), libdispatch's manager thread can dereference a freed epoll note and
/// the whole test process dies of SIGSEGV in `_dispatch_event_loop_drain`
/// (swift-corelibs-libdispatch issue 949; a clean-clone `make test` on 2026-12-06 did). A
/// blocking read never registers the descriptor with libdispatch.
public enum PipeReader {
    /// Hands each chunk read from `handle` to `body`, then an empty chunk at end of file (the
    /// child and every copy of the pipe's write end gone), and stops. Returns at once.
    public static func forward(_ handle: FileHandle, to body: @escaping @Sendable (Data) -> Void) {
        let thread = Thread {
            while true {
                let data = handle.availableData
                body(data)
                if data.isEmpty { return }
            }
        }
        thread.name = "pipe-reader"
        thread.start()
    }
}
