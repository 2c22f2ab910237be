public import NIOCore
public import TallyCore

/// The kinds of frame, with their stable one-byte codes. See protocol/SPEC.md §3.
public enum FrameType: UInt8, Sendable, Hashable, CaseIterable {
    case hello = 0x01
    case challenge = 0x02
    case auth = 0x03
    case welcome = 0x04
    case batch = 0x05
    case ack = 0x06
    case error = 0x07
    case ping = 0x08
    case pong = 0x09
    case goaway = 0x0A
}

/// One protocol message. Every value of this type encodes to exactly one byte string and every
/// byte string that decodes gives back an equal value (decode and re-encode are byte-for-byte).
public enum Frame: Sendable, Hashable {
    case hello(Hello)
    case challenge(Challenge)
    case auth(Auth)
    case welcome(Welcome)
    case batch(Batch)
    case ack(BatchAck)
    case error(ErrorFrame)
    case ping(UInt64)
    case pong(UInt64)
    case goaway(GoAway)

    public var type: FrameType {
        switch self {
        case .hello: .hello
        case .challenge: .challenge
        case .auth: .auth
        case .welcome: .welcome
        case .batch: .batch
        case .ack: .ack
        case .error: .error
        case .ping: .ping
        case .pong: .pong
        case .goaway: .goaway
        }
    }
}

/// The 32 random bytes each side contributes to the handshake; fresh for every connection.
public struct Nonce: Sendable, Hashable, CustomStringConvertible {
    public static let byteCount = 32
    public let bytes: [UInt8]

    /// A nonce from exactly 32 bytes, or nil.
    public init?(bytes: [UInt8]) {
        guard bytes.count == Self.byteCount else { return nil }
        self.bytes = bytes
    }

    /// A nonce from the system's secure random generator.
    public static func random() -> Nonce {
        var generator = SystemRandomNumberGenerator()
        return Nonce(uncheckedBytes: (0..<byteCount).map { _ in UInt8.random(in: 0...255, using: &generator) })
    }

    init(uncheckedBytes: [UInt8]) { self.bytes = uncheckedBytes }

    /// 64 lowercase hex digits.
    public var description: String { Hex.encode(bytes) }
}

/// An HMAC-SHA256 proof of knowing an agent's secret key: 32 bytes.
public struct Proof: Sendable, Hashable {
    public static let byteCount = 32
    public let bytes: [UInt8]

    public init?(bytes: [UInt8]) {
        guard bytes.count == Self.byteCount else { return nil }
        self.bytes = bytes
    }

    init(uncheckedBytes: [UInt8]) { self.bytes = uncheckedBytes }

    /// All zeros: what an unauthenticated (open) collector sends in place of a proof.
    public static let none = Proof(uncheckedBytes: [UInt8](repeating: 0, count: byteCount))
}

/// Agent → collector, first frame: who the agent is, which protocol versions it speaks, and its
/// half of the handshake randomness.
public struct Hello: Sendable, Hashable {
    public var minVersion: UInt16
    public var maxVersion: UInt16
    public var agentId: String
    public var agentNonce: Nonce
    /// Free text for logs, e.g. `tally-agent/0.1.0`.
    public var software: String

    public init(minVersion: UInt16, maxVersion: UInt16, agentId: String, agentNonce: Nonce, software: String) {
        self.minVersion = minVersion
        self.maxVersion = maxVersion
        self.agentId = agentId
        self.agentNonce = agentNonce
        self.software = software
    }
}

/// Collector → agent: the chosen protocol version and the collector's half of the randomness.
public struct Challenge: Sendable, Hashable {
    public var version: UInt16
    public var collectorNonce: Nonce

    public init(version: UInt16, collectorNonce: Nonce) {
        self.version = version
        self.collectorNonce = collectorNonce
    }
}

/// Agent → collector: the agent's proof (see ``Handshake/agentProof(secret:version:agentId:agentNonce:collectorNonce:)``).
public struct Auth: Sendable, Hashable {
    public var proof: Proof
    public init(proof: Proof) { self.proof = proof }
}

/// Collector → agent: the session is open. Carries the collector's own proof (so an impostor
/// cannot ack batches and make an agent delete its spool) and the limits the agent must respect.
public struct Welcome: Sendable, Hashable {
    /// Set when the collector checked the agent's key and `proof` is its own proof.
    public var authenticated: Bool
    public var version: UInt16
    public var proof: Proof
    public var limits: SessionLimits

    public init(authenticated: Bool, version: UInt16, proof: Proof, limits: SessionLimits) {
        self.authenticated = authenticated
        self.version = version
        self.proof = proof
        self.limits = limits
    }
}

/// The limits a collector announces in its welcome; the agent stays within them.
public struct SessionLimits: Sendable, Hashable {
    /// The largest frame body, in bytes.
    public var maxFrameBody: UInt32
    /// The largest batch payload once decompressed, in bytes.
    public var maxDecompressedBytes: UInt32
    /// The most events in one batch.
    public var maxEventsPerBatch: UInt32
    /// The most batches sent and not yet acknowledged.
    public var window: UInt16

    public init(maxFrameBody: UInt32, maxDecompressedBytes: UInt32, maxEventsPerBatch: UInt32, window: UInt16) {
        self.maxFrameBody = maxFrameBody
        self.maxDecompressedBytes = maxDecompressedBytes
        self.maxEventsPerBatch = maxEventsPerBatch
        self.window = window
    }

    /// The defaults of SPEC.md §7.
    public static let standard = SessionLimits(
        maxFrameBody: 16 << 20, maxDecompressedBytes: 64 << 20, maxEventsPerBatch: 10_000, window: 8)
}

/// Agent → collector: one batch of events. The agent id is the session's; `(agentId, sequence)`
/// names the batch forever, across connections and collectors.
public struct Batch: Sendable, Hashable {
    public var sequence: UInt64
    /// The encoded events (``BatchPayload``), kept as bytes so the collector can decode them
    /// off the event loop.
    public var payload: ByteBuffer

    public init(sequence: UInt64, payload: ByteBuffer) {
        self.sequence = sequence
        self.payload = payload
    }
}

/// Collector → agent: the outcome of one batch, committed before it was sent. A batch sent
/// again gets this same ack, byte for byte. `accepted + duplicate + late + rejected` is the
/// batch's event count.
public struct BatchAck: Sendable, Hashable {
    /// How the batch as a whole fared.
    public enum Status: UInt8, Sendable, Hashable {
        /// Every event is accounted for in the counts; rejected ones are listed.
        case committed = 0
        /// The payload did not decode: every event counts as rejected (`malformed`), none is
        /// listed, and the collector keeps the raw batch for audit.
        case malformed = 1
    }

    /// One rejected event: its index in the batch and why.
    public struct Rejection: Sendable, Hashable {
        public var index: UInt32
        public var reason: RejectionReason
        public init(index: UInt32, reason: RejectionReason) {
            self.index = index
            self.reason = reason
        }
    }

    public var sequence: UInt64
    public var status: Status
    public var accepted: UInt32
    public var duplicate: UInt32
    public var late: UInt32
    public var rejected: UInt32
    /// In increasing index order; as many as `rejected` when committed, none when malformed.
    public var rejections: [Rejection]

    public init(
        sequence: UInt64, status: Status = .committed, accepted: UInt32, duplicate: UInt32 = 0, late: UInt32 = 0,
        rejected: UInt32 = 0, rejections: [Rejection] = []
    ) {
        self.sequence = sequence
        self.status = status
        self.accepted = accepted
        self.duplicate = duplicate
        self.late = late
        self.rejected = rejected
        self.rejections = rejections
    }

    /// The ack of a batch whose payload does not decode: all `declaredEvents` rejected as
    /// malformed (SPEC.md §5.4).
    public static func malformed(sequence: UInt64, declaredEvents: UInt32) -> BatchAck {
        BatchAck(sequence: sequence, status: .malformed, accepted: 0, rejected: declaredEvents)
    }

    /// The number of events the ack accounts for.
    public var eventCount: UInt64 { UInt64(accepted) + UInt64(duplicate) + UInt64(late) + UInt64(rejected) }
}

/// Either direction: the sender closes the connection after this frame.
public struct ErrorFrame: Sendable, Hashable {
    /// A ``WireErrorCode`` raw value; an unknown code is kept as it is (and treated as not retryable).
    public var code: UInt16
    public var message: String

    public init(code: UInt16, message: String) {
        self.code = code
        self.message = message
    }

    /// The error, or nil for a code this side does not know.
    public var wireError: WireError? { WireErrorCode(rawValue: code).map { WireError($0, message) } }
}

/// Collector → agent: no new batches on this connection. Batches already received are still
/// acked; then the collector closes. The agent reconnects after `retryAfterMilliseconds`.
public struct GoAway: Sendable, Hashable {
    public var code: UInt16
    public var retryAfterMilliseconds: UInt32
    public var message: String

    public init(code: UInt16, retryAfterMilliseconds: UInt32, message: String) {
        self.code = code
        self.retryAfterMilliseconds = retryAfterMilliseconds
        self.message = message
    }
}
