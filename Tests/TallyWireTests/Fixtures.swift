import NIOCore
import TallyCore
@testable import TallyWire
import TallyWorkload

/// Deterministic values shared by the tests.
enum Fixtures {
    static func nonce(_ seed: UInt8) -> Nonce {
        Nonce(bytes: (0..<32).map { UInt8(truncatingIfNeeded: Int(seed) &* 31 &+ $0) })!
    }

    static func encode(_ frame: Frame) throws -> ByteBuffer {
        try FrameEncoder().encode(frame)
    }

    static func bytes(_ frame: Frame) throws -> [UInt8] {
        var buffer = try encode(frame)
        return buffer.readBytes(length: buffer.readableBytes)!
    }

    static let time = EventTime(microseconds: 1_776_081_600_000_000)  // 2026-04-13T12:00:00Z

    static func event(
        tenant: String = "acme", metric: String = "api_calls", nanos: Int128 = 1_000_000_000, at offset: Int64 = 0,
        id: String? = nil, properties: [(String, String)] = []
    ) -> UsageEvent {
        UsageEvent(
            tenant: tenant, metric: metric, quantity: Quantity(nanos: nanos), timestamp: EventTime(microseconds: time.microseconds + offset),
            id: id, properties: Properties(properties))
    }

    static let payload: ByteBuffer = ByteBuffer(bytes: [1, 2, 3, 4])

    /// One of every frame type, with fixed field values.
    static let frames: [(name: String, frame: Frame)] = [
        ("hello", .hello(Hello(minVersion: 1, maxVersion: 1, agentId: "agent-eu-1", agentNonce: nonce(1), software: "tally-agent/0.1.0"))),
        ("challenge", .challenge(Challenge(version: 1, collectorNonce: nonce(2)))),
        (
            "auth",
            .auth(
                Auth(
                    proof: Handshake.agentProof(
                        secret: Array("s3cret".utf8), version: 1, agentId: "agent-eu-1", agentNonce: nonce(1), collectorNonce: nonce(2))))
        ),
        (
            "welcome",
            .welcome(
                Welcome(
                    authenticated: true, version: 1,
                    proof: Handshake.collectorProof(
                        secret: Array("s3cret".utf8), version: 1, agentId: "agent-eu-1", agentNonce: nonce(1), collectorNonce: nonce(2)),
                    limits: .standard))
        ),
        ("welcome-open", .welcome(Welcome(authenticated: false, version: 1, proof: .none, limits: .standard))),
        ("batch", .batch(Batch(sequence: 42, payload: payload))),
        (
            "ack",
            .ack(
                BatchAck(
                    sequence: 42, accepted: 995, duplicate: 2, late: 1, rejected: 2,
                    rejections: [.init(index: 7, reason: .futureTimestamp), .init(index: 512, reason: .tooOld)]))
        ),
        ("ack-malformed", .ack(.malformed(sequence: 43, declaredEvents: 1000))),
        ("error", .error(WireError(.authenticationFailed, "the proof for agent 'agent-eu-1' is wrong").frame)),
        ("ping", .ping(0x0102_0304_0506_0708)),
        ("pong", .pong(0x0102_0304_0506_0708)),
        ("goaway", .goaway(GoAway(code: WireErrorCode.shuttingDown.rawValue, retryAfterMilliseconds: 1500, message: "collector shutting down"))),
    ]
}
