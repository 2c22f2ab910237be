import Testing
import Foundation
import TallyTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// A blocking loopback TCP connection for tests that speak raw bytes.
enum RawConnection {
    /// Connects to `port` on 127.0.0.1 and closes again without sending anything.
    static func touch(port: Int) throws {
        let fd = try open(port: port)
        close(fd)
    }

    /// A connected socket to `port` on 127.0.0.1.
    static func open(port: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw HarnessError("socket: \(String(cString: strerror(errno)))") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            close(fd)
            throw HarnessError("connect to 127.0.0.1:\(port): \(String(cString: strerror(errno)))")
        }
        return fd
    }
}

/// A loopback port nothing listens on now (TallyTestSupport's, shared with the PostgreSQL harness).
func freePort() throws -> Int { try freeLoopbackPort() }

/// The unacknowledged events in a spool, as `tallyctl spool status --json` reports them.
func spoolBacklog(_ spool: String, unprivileged: Bool = false) async throws -> Int? {
    let status = try await BinaryRunner.run("tallyctl", ["spool", "status", "--spool", spool, "--json"], unprivileged: unprivileged)
    guard status.status == 0 else {
        Issue.record("tallyctl spool status failed beside the running agent: \(status.stderr)")
        return nil
    }
    return (try JSONSerialization.jsonObject(with: status.stdout) as? [String: Any])?["events"] as? Int
}
