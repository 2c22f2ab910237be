import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A port on 127.0.0.1 that was free a moment ago: bound with port 0, read back, closed.
/// Another bind may take it before the caller does; callers that hand it to a server retry or
/// fail loudly. For a port that must stay unreachable, use ``DeadPort``.
public func freeLoopbackPort() throws -> Int {
    let fd = try boundLoopbackSocket()
    close(fd.descriptor)
    return fd.port
}

/// A loopback port that refuses every connection for as long as this value is open: a socket
/// bound to it that never listens. Unlike a port closed after binding, no other bind in the
/// test process (or any other) can take it meanwhile, so a "collector that is down" stays down.
public final class DeadPort: Sendable {
    public let port: Int
    private let descriptor: Int32

    public init() throws {
        (descriptor, port) = try boundLoopbackSocket()
    }

    /// Frees the port. Call it at the end of the test (`defer`): that also keeps the value
    /// alive until then.
    public func close() { _ = Glibc.close(descriptor) }
}

private func boundLoopbackSocket() throws -> (descriptor: Int32, port: Int) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw PostgresTestServerError.system("socket: \(String(cString: strerror(errno)))") }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
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
