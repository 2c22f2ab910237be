import NIOCore
import TallyCore

/// The challenge-response proofs of SPEC.md §4. Each side proves it knows the agent's secret by
/// an HMAC-SHA256 over both nonces, the agreed version and the agent id; the secret itself never
/// crosses the wire, and a proof is useless for any other connection.
public enum Handshake {
    /// The protocol versions this code speaks.
    public static let supportedVersions: ClosedRange<UInt16> = 1...1
    static let agentLabel = "tally/1 agent proof"
    static let collectorLabel = "tally/1 collector proof"

    /// The bytes both proofs cover (after their label): `str16 label, u16 version, str16 agent
    /// id, agent nonce (32), collector nonce (32)`.
    public static func transcript(
        label: String, version: UInt16, agentId: String, agentNonce: Nonce, collectorNonce: Nonce
    ) -> [UInt8] {
        var buffer = ByteBuffer()
        buffer.writeString16(label)
        buffer.writeInteger(version)
        buffer.writeString16(agentId)
        buffer.writeBytes(agentNonce.bytes)
        buffer.writeBytes(collectorNonce.bytes)
        return buffer.readBytes(length: buffer.readableBytes) ?? []
    }

    /// What the agent sends in its `auth` frame.
    public static func agentProof(secret: [UInt8], version: UInt16, agentId: String, agentNonce: Nonce, collectorNonce: Nonce) -> Proof {
        proof(secret, transcript(label: agentLabel, version: version, agentId: agentId, agentNonce: agentNonce, collectorNonce: collectorNonce))
    }

    /// What the collector sends in its `welcome` frame.
    public static func collectorProof(secret: [UInt8], version: UInt16, agentId: String, agentNonce: Nonce, collectorNonce: Nonce) -> Proof {
        proof(secret, transcript(label: collectorLabel, version: version, agentId: agentId, agentNonce: agentNonce, collectorNonce: collectorNonce))
    }

    /// Checks a proof in constant time.
    static func verify(_ proof: Proof, expected: Proof) -> Bool {
        var difference: UInt8 = 0
        for (a, b) in zip(proof.bytes, expected.bytes) { difference |= a ^ b }
        return difference == 0 && proof.bytes.count == expected.bytes.count
    }

    private static func proof(_ secret: [UInt8], _ message: [UInt8]) -> Proof {
        Proof(uncheckedBytes: SHA256Digest.hmac(key: secret, message: message))
    }

    /// The highest version in both ranges, or nil.
    public static func negotiate(agent: ClosedRange<UInt16>, collector: ClosedRange<UInt16>) -> UInt16? {
        let high = min(agent.upperBound, collector.upperBound)
        return high >= max(agent.lowerBound, collector.lowerBound) ? high : nil
    }
}

/// The largest agent id, in UTF-8 bytes.
public let maxAgentIdBytes = 128
