import Glibc

/// Names the calling thread, as `top -H`, `ps -L -o comm`, `/proc/PID/task/*/comm` and `perf`
/// show it: an operator looking at a busy collector sees `tally-writer` or `tally-prepare`
/// instead of NIO's `TP-#0` for three different pools (the writer, the preparation threads, the
/// log checkpointer). Through `/proc/thread-self/comm`: `pthread_setname_np` is not visible to
/// Swift (glibc declares it for `_GNU_SOURCE` only). Linux keeps the first 15 bytes. A failure
/// (no `/proc`) leaves the name as it was.
public enum ThreadName {
    public static let maximumBytes = 15

    /// Names the calling thread `name`. Callers call it before each batch, read or checkpoint:
    /// the thread remembers (a thread-specific value, gone with the thread) which name it was
    /// given, so only the first call on a thread, or one with another name, touches `/proc`.
    public static func set(_ name: String) {
        let tag = UnsafeMutableRawPointer(bitPattern: name.hashValue | 1)
        if let given, pthread_getspecific(given) == tag { return }
        let fd = open("/proc/thread-self/comm", O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return }
        defer { close(fd) }
        let bytes = Array(name.utf8.prefix(maximumBytes))
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        if written == bytes.count, let given { pthread_setspecific(given, tag) }
    }

    /// The key of the name each thread was given by ``set(_:)`` (as a tag); nil if none could
    /// be made, and every call then writes the name.
    private static let given: pthread_key_t? = {
        var key = pthread_key_t()
        return pthread_key_create(&key, nil) == 0 ? key : nil
    }()

    /// The calling thread's name ("" when it cannot be read).
    public static func current() -> String {
        let fd = open("/proc/thread-self/comm", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return "" }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 64)
        let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard count > 0 else { return "" }
        var name = buffer[..<count]
        while name.last == UInt8(ascii: "\n") { name.removeLast() }
        return String(decoding: name, as: UTF8.self)
    }
}
