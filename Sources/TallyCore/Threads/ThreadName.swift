import Glibc

/// Names the calling thread, as `top -H`, `ps -L -o comm`, `/proc/PID/task/*/comm` and `perf`
/// show it: an operator looking at a busy collector sees `tally-writer` or `tally-prepare`
/// instead of NIO's `TP-#0` for three different pools (the writer, the preparation threads, the
/// log checkpointer). Through `/proc/thread-self/comm`: `pthread_setname_np` is not visible to
/// Swift (glibc declares it for `_GNU_SOURCE` only). Linux keeps the first 15 bytes. Callers name
/// their thread once per batch or checkpoint (three system calls, nothing per event); a
/// failure (no `/proc`) leaves the name as it was.
public enum ThreadName {
    public static let maximumBytes = 15

    public static func set(_ name: String) {
        let fd = open("/proc/thread-self/comm", O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return }
        defer { close(fd) }
        let bytes = Array(name.utf8.prefix(maximumBytes))
        _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    }

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
