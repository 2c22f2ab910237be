import Foundation
import TallyTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The ports handed to servers a test starts: never one a parallel test's port-0 listener could
/// take first, never the same twice; and a dead port that stays dead.
@Suite struct LoopbackPortTests {
    @Test func serverPortsComeFromBelowTheEphemeralRangeAndAreNeverRepeated() throws {
        let text = try String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8)
        let lowest = try #require(text.split(whereSeparator: \.isWhitespace).first.flatMap { Int($0) })
        let ports = try (0..<50).map { _ in try freeLoopbackPort() }
        #expect(ports.allSatisfy { $0 < lowest && $0 >= 1_024 }, "\(ports) (ephemeral from \(lowest))")
        #expect(Set(ports).count == ports.count)
    }

    @Test func aDeadPortRefusesConnections() throws {
        let dead = try DeadPort()
        defer { dead.close() }
        #expect(throws: HarnessError.self) { try RawConnection.touch(port: dead.port) }
    }
}
