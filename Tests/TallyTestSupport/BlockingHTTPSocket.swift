import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A blocking TCP client that reads response heads byte by byte, with a receive timeout so that
/// an answer that never comes fails the test instead of hanging it.
// @unchecked: one test uses it at a time, one call after another.
public final class BlockingHTTPSocket: @unchecked Sendable {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    private let fd: Int32

    public init(port: Int, timeoutSeconds: Int = 10) throws {
        fd = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket: errno \(errno)") }
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            Glibc.close(fd)
            throw Failure(description: "connect: errno \(errno)")
        }
    }

    public func send(_ text: String) throws {
        let bytes = Array(text.utf8)
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw Failure(description: "send: errno \(errno)") }
            sent += n
        }
    }

    /// Reads up to the blank line that ends a response head; with a Content-Length, reads and
    /// drops the body too.
    public func readHead() throws -> String {
        try readResponse().head
    }

    /// Reads one response: its head (up to the blank line) and its body (Content-Length bytes).
    public func readResponse() throws -> (head: String, body: [UInt8]) {
        var head: [UInt8] = []
        var byte: UInt8 = 0
        while !head.ends(with: [13, 10, 13, 10]) {
            guard Glibc.recv(fd, &byte, 1, 0) == 1 else { throw Failure(description: "no answer (got \(String(decoding: head, as: UTF8.self)))") }
            head.append(byte)
        }
        let text = String(decoding: head, as: UTF8.self)
        let length =
            text.split(separator: "\r\n").first { $0.lowercased().hasPrefix("content-length:") }
            .flatMap { Int($0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) } ?? 0
        var body = [UInt8](repeating: 0, count: length)
        var read = 0
        while read < length {
            let n = body[read...].withUnsafeMutableBytes { Glibc.recv(fd, $0.baseAddress, $0.count, 0) }
            guard n > 0 else { throw Failure(description: "short body") }
            read += n
        }
        return (text, body)
    }

    /// ``readHead()`` on a thread of its own (``offThePool(_:)``): the answer awaited may need
    /// the cooperative pool to be made.
    public func readHeadOffThePool() async throws -> String {
        try await offThePool { try self.readHead() }
    }

    /// Half-closes the connection: the client will send nothing more.
    public func shutdownWrite() { Glibc.shutdown(fd, Int32(SHUT_WR)) }

    /// Reads until the peer closes (true) or the receive timeout passes (false); data is dropped.
    public func waitForClose() throws -> Bool {
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buffer.withUnsafeMutableBytes { Glibc.recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { return true }
            if n < 0 { return errno == ECONNRESET }
        }
    }

    /// Starts ``waitForClose()`` on a thread of its own now, and notes on that thread when the
    /// close came: a test bounding how long a close took must not count the wait for its own
    /// task to resume on a busy cooperative pool (a loaded CI run once took 9 s that way for
    /// closes that came within a second).
    public func watchForClose() -> CloseWatch { CloseWatch(self) }

    public func close() { Glibc.close(fd) }
}

/// A close awaited on a thread of its own (``BlockingHTTPSocket/watchForClose()``).
public final class CloseWatch: Sendable {
    private let seen = Mutex<(closed: Bool, at: ContinuousClock.Instant)?>(nil)
    private let done = DispatchSemaphore(value: 0)

    fileprivate init(_ socket: BlockingHTTPSocket) {
        Thread { [self] in
            let closed = (try? socket.waitForClose()) ?? false
            seen.withLock { $0 = (closed, ContinuousClock.now) }
            done.signal()
        }.start()
    }

    /// Whether the peer closed, and when the waiting thread saw it.
    public func outcome() async -> (closed: Bool, at: ContinuousClock.Instant) {
        await withCheckedContinuation { (continuation: CheckedContinuation<(closed: Bool, at: ContinuousClock.Instant), Never>) in
            Thread { [self] in
                done.wait()
                continuation.resume(returning: seen.withLock { $0 } ?? (false, ContinuousClock.now))
            }.start()
        }
    }
}

extension Array where Element == UInt8 {
    public func ends(with suffix: [UInt8]) -> Bool { count >= suffix.count && Array(self[(count - suffix.count)...]) == suffix }
}
