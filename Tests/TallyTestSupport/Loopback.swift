import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A port on 127.0.0.1 that was free a moment ago, for a server the test starts (and may restart
/// on the same port). It is taken from below the kernel's ephemeral range
/// (`/proc/sys/net/ipv4/ip_local_port_range`), where no `bind` to port 0 and no outgoing
/// connection can land — so the many listeners a parallel test run opens on port 0 can never
/// take it before the server binds it — and never handed out twice by this process.
/// For a port that must stay unreachable, use ``DeadPort``.
public func freeLoopbackPort() throws -> Int {
    try PortPicker.shared.next()
}

private final class PortPicker: Sendable {
    static let shared = PortPicker()

    private let range: ClosedRange<Int>
    private let cursor: Mutex<Int>

    private init() {
        var lowestEphemeral = 32768
        if let text = try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8),
            let first = text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).first, let value = Int(first)
        {
            lowestEphemeral = value
        }
        let upper = max(2_048, lowestEphemeral - 1)
        range = max(1_024, upper - 12_000)...upper
        // A random start, so two test processes on one machine rarely walk the same ports.
        cursor = Mutex(Int.random(in: range))
    }

    func next() throws -> Int {
        for _ in 0..<range.count {
            let port = cursor.withLock { cursor in
                let port = cursor
                cursor = cursor == range.upperBound ? range.lowerBound : cursor + 1
                return port
            }
            if let fd = try? boundLoopbackSocket(port: port) {
                close(fd.descriptor)
                return port
            }
        }
        throw PostgresTestServerError.system("no free loopback port in \(range)")
    }
}

/// A loopback port that refuses every connection for as long as this value is open: a socket
/// bound to it that never listens. Unlike a port closed after binding, no other bind in the
/// test process (or any other) can take it meanwhile, so a "collector that is down" stays down.
public final class DeadPort: Sendable {
    public let port: Int
    private let descriptor: Int32

    public init() throws {
        (descriptor, port) = try boundLoopbackSocket(port: 0)
    }

    /// Frees the port. Call it at the end of the test (`defer`): that also keeps the value
    /// alive until then.
    public func close() { _ = Glibc.close(descriptor) }
}

/// A TCP socket bound (not listening) to 127.0.0.1:`port`, 0 for one the kernel picks.
private func boundLoopbackSocket(port: Int) throws -> (descriptor: Int32, port: Int) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw PostgresTestServerError.system("socket: \(String(cString: strerror(errno)))") }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0
        }
    }
    guard bound else {
        let reason = String(cString: strerror(errno))
        close(fd)
        throw PostgresTestServerError.system("no free port: \(reason)")
    }
    return (fd, Int(UInt16(bigEndian: address.sin_port)))
}
