import NIOCore
import TallyCore

/// One agent's key as the collector knows it, and the tenants it may report for.
public struct AgentKey: Sendable, Hashable {
    public var secret: [UInt8]
    /// The tenants this agent may send events for; nil allows every tenant.
    public var allowedTenants: Set<String>?

    public init(secret: [UInt8], allowedTenants: Set<String>? = nil) {
        self.secret = secret
        self.allowedTenants = allowedTenants
    }
}

/// The agents a collector accepts. With no keys at all it is *open*: any agent id is accepted
/// without proof (the collector allows that on loopback only, and says so in its log).
public struct AgentKeyring: Sendable, Hashable {
    public var keys: [String: AgentKey]

    public init(keys: [String: AgentKey] = [:]) { self.keys = keys }

    public var isOpen: Bool { keys.isEmpty }
}

/// The collector's side of one agent connection, as a value-type state machine (SPEC.md §4,
/// §6, §8): version negotiation, challenge-response against the keyring, then batches within
/// the window. It does no I/O and touches no store: a batch comes out as
/// ``Action/process(_:)``, and the caller feeds the committed ack back in with
/// ``batchCompleted(_:)``.
///
/// Guarantees: no batch is handed out before the agent proved its key; at most `window`
/// distinct sequences are being processed at once; a copy of a batch that is still being
/// processed (a resend on the same connection) is handed out again, after it, and acked on its
/// own (it finds the first copy's record: the same outcome, or `sequence_reused` if its content
/// differs), as when batches were processed one at a time; after
/// ``shutdown(retryAfterMilliseconds:)`` no new batch is handed out, yet every batch already
/// handed out still gets its ack before the connection closes.
///
/// Time and silence are inputs too (SPEC §3, §8): the caller reports bytes from the agent with
/// ``heard(now:)`` and the passing of time with ``tick(now:)``. A connection whose handshake is
/// not done within ``Liveness/handshakeTimeout``, or that is silent for
/// ``Liveness/idleTimeout``, is closed with a `timeout` error; an open session silent for
/// ``Liveness/pingAfter`` is pinged once per silence. No ping is sent before the session is open.
public struct CollectorSession: Sendable {
    /// When to ping a silent agent and when to give up on one.
    public struct Liveness: Sendable, Hashable {
        public var pingAfter: Duration
        public var idleTimeout: Duration
        public var handshakeTimeout: Duration

        public init(pingAfter: Duration = .seconds(30), idleTimeout: Duration = .seconds(90), handshakeTimeout: Duration = .seconds(10)) {
            self.pingAfter = pingAfter
            self.idleTimeout = idleTimeout
            self.handshakeTimeout = handshakeTimeout
        }
    }

    public struct Configuration: Sendable {
        public var keyring: AgentKeyring
        public var limits: SessionLimits
        public var versions: ClosedRange<UInt16>
        /// The connection is TLS with client certificates: the hello's agent id must be one of
        /// the names of the agent's verified certificate (``peerCertified(names:)``), in
        /// addition to the key's proof (SPEC §4.1).
        public var requiresCertificateIdentity: Bool
        public var liveness: Liveness

        public init(
            keyring: AgentKeyring, limits: SessionLimits = .standard, versions: ClosedRange<UInt16> = Handshake.supportedVersions,
            requiresCertificateIdentity: Bool = false, liveness: Liveness = Liveness()
        ) {
            self.keyring = keyring
            self.limits = limits
            self.versions = versions
            self.requiresCertificateIdentity = requiresCertificateIdentity
            self.liveness = liveness
        }
    }

    /// What the caller must do next.
    public enum Action: Sendable, Hashable {
        case none
        case send(Frame)
        /// Decode, dedupe and commit this batch, then call ``batchCompleted(_:)`` with its ack
        /// (for a sequence already committed: the original ack).
        case process(Batch)
        /// Write this frame, then close the connection.
        case sendAndClose(Frame)
        /// Close the connection; nothing more to say.
        case close
        /// A batch that arrived after the goaway: not processed and never acked; the agent
        /// sends it again after reconnecting (for the caller's metrics).
        case dropBatch(sequence: UInt64)
    }

    enum State: Sendable {
        case awaitingHello
        case awaitingAuth(hello: Hello, version: UInt16, key: AgentKey?)
        case ready(agentId: String, key: AgentKey?)
        case goingAway(agentId: String, key: AgentKey?)
        case closed
    }

    public let configuration: Configuration
    public let collectorNonce: Nonce
    private var state: State = .awaitingHello
    /// The sequences handed out and not completed, with how many copies of each.
    private var inFlight: [UInt64: Int] = [:]
    /// Every batch handed out and not completed, copies included (the sum of `inFlight`).
    private var copiesInFlight = 0
    /// The sequences in flight none of whose copies has been acked yet: the agent's window. A
    /// sequence leaves it with its first ack, and the agent then fills that slot with a new batch
    /// while a copy of the old one may still be in processing here.
    private var unacked: Set<UInt64> = []
    private var certificateNames: Set<String>?
    private let openedAt: ContinuousClock.Instant
    private var lastHeard: ContinuousClock.Instant
    /// Whether the current silence has had its ping.
    private var pinged = false
    private var pings: UInt64 = 0

    /// A connection accepted at `now`.
    public init(configuration: Configuration, collectorNonce: Nonce, now: ContinuousClock.Instant = .now) {
        self.configuration = configuration
        self.collectorNonce = collectorNonce
        openedAt = now
        lastHeard = now
    }

    /// The authenticated agent, once the handshake is done.
    public var agentId: String? {
        switch state {
        case .ready(let agentId, _), .goingAway(let agentId, _): agentId
        default: nil
        }
    }

    /// The frame body limit for the decoder now: small until the agent is authenticated.
    public var maxInboundFrameBody: Int {
        agentId == nil ? FrameLayout.handshakeMaxBody : Int(configuration.limits.maxFrameBody)
    }

    /// Whether this agent may report events for `tenant` (its key's allow-list). Events for
    /// other tenants are rejected one by one in the ack, never silently dropped.
    public func admits(tenant: String) -> Bool {
        switch state {
        case .ready(_, let key), .goingAway(_, let key):
            guard let allowed = key?.allowedTenants else { return true }
            return allowed.contains(tenant)
        default: return false
        }
    }

    /// The TLS handshake verified the agent's client certificate, which carries these names
    /// (its common name and DNS alternative names). Feed it before the hello.
    public mutating func peerCertified(names: Set<String>) {
        certificateNames = names
    }

    /// Whether the session still needs the peer's certificate names before it can take a hello.
    public var awaitsCertificate: Bool {
        guard configuration.requiresCertificateIdentity, certificateNames == nil else { return false }
        if case .awaitingHello = state { return true }
        return false
    }

    /// Batches handed out and not yet completed.
    public var batchesInFlight: Int { copiesInFlight }

    public mutating func received(_ frame: Frame) -> Action {
        switch (state, frame) {
        case (.closed, _):
            return .none
        case (_, .error):
            state = .closed
            return .close
        case (.awaitingHello, .hello(let hello)):
            return greet(hello)
        case (.awaitingAuth(let hello, let version, let key), .auth(let auth)):
            guard let key else {
                state = .ready(agentId: hello.agentId, key: nil)
                return .send(.welcome(Welcome(authenticated: false, version: version, proof: .none, limits: configuration.limits)))
            }
            let expected = Handshake.agentProof(
                secret: key.secret, version: version, agentId: hello.agentId, agentNonce: hello.agentNonce,
                collectorNonce: collectorNonce)
            guard Handshake.verify(auth.proof, expected: expected) else {
                return fail(.authenticationFailed, "the proof for agent '\(hello.agentId)' is wrong: check its key")
            }
            let proof = Handshake.collectorProof(
                secret: key.secret, version: version, agentId: hello.agentId, agentNonce: hello.agentNonce,
                collectorNonce: collectorNonce)
            state = .ready(agentId: hello.agentId, key: key)
            return .send(.welcome(Welcome(authenticated: true, version: version, proof: proof, limits: configuration.limits)))
        case (.ready, .batch(let batch)):
            // A copy of a sequence in flight takes no slot of the window: the agent sent it once.
            // The window counts the sequences not yet acked, as the agent does: once one copy is
            // acked, the agent may send a new batch while another copy is still in processing.
            // Copies are bounded all the same (twice the window, copies and sequences together):
            // an agent that repeats a frame without end would otherwise queue work without end.
            let window = Int(configuration.limits.window)
            let isCopy = inFlight[batch.sequence] != nil
            guard isCopy || unacked.count < window else {
                return fail(.windowExceeded, "more than \(window) batches unacknowledged")
            }
            guard copiesInFlight < 2 * window else {
                return fail(.windowExceeded, "more than \(2 * window) batches unacknowledged, resent copies included")
            }
            if !isCopy { unacked.insert(batch.sequence) }
            inFlight[batch.sequence, default: 0] += 1
            copiesInFlight += 1
            return .process(batch)
        case (.goingAway, .batch(let batch)):
            // Not processed and never acked here: the agent sends it again after reconnecting.
            return .dropBatch(sequence: batch.sequence)
        case (.ready, .ping(let opaque)), (.goingAway, .ping(let opaque)):
            return .send(.pong(opaque))
        case (.ready, .pong), (.goingAway, .pong):
            return .none
        default:
            return fail(.unexpectedFrame, "a frame of type \(frame.type) is not expected now")
        }
    }

    private mutating func greet(_ hello: Hello) -> Action {
        guard !hello.agentId.isEmpty, hello.agentId.utf8.count <= maxAgentIdBytes,
            !hello.agentId.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F })
        else {
            return fail(.malformedFrame, "an agent id must be 1 to \(maxAgentIdBytes) bytes of printable text")
        }
        if configuration.requiresCertificateIdentity {
            let names = certificateNames ?? []
            guard names.contains(hello.agentId) else {
                let shown = names.isEmpty ? "no certificate" : "a certificate for " + names.sorted().joined(separator: ", ")
                return fail(.authenticationFailed, "agent '\(hello.agentId)' presented \(shown): the certificate must name the agent id")
            }
        }
        guard let version = Handshake.negotiate(agent: hello.minVersion...hello.maxVersion, collector: configuration.versions) else {
            return fail(
                .unsupportedVersion,
                "the agent speaks versions \(hello.minVersion)-\(hello.maxVersion); this collector speaks \(configuration.versions.lowerBound)-\(configuration.versions.upperBound)"
            )
        }
        var key: AgentKey?
        if !configuration.keyring.isOpen {
            guard let known = configuration.keyring.keys[hello.agentId] else {
                return fail(.unknownAgent, "no key is configured for agent '\(hello.agentId)'")
            }
            key = known
        }
        state = .awaitingAuth(hello: hello, version: version, key: key)
        return .send(.challenge(Challenge(version: version, collectorNonce: collectorNonce)))
    }

    /// The batch handed out by ``Action/process(_:)`` is committed (or was already): send its ack.
    public mutating func batchCompleted(_ ack: BatchAck) -> Action {
        guard removeCopy(of: ack.sequence) else { return .none }
        unacked.remove(ack.sequence)
        switch state {
        case .ready: return .send(.ack(ack))
        case .goingAway:
            guard inFlight.isEmpty else { return .send(.ack(ack)) }
            state = .closed
            return .sendAndClose(.ack(ack))
        default: return .none
        }
    }

    /// Processing a batch failed (the store is down, ...): nothing was committed. The agent is
    /// told and will resend after reconnecting.
    public mutating func batchFailed(sequence: UInt64, error: WireError) -> Action {
        removeCopy(of: sequence)
        state = .closed
        return .sendAndClose(.error(error.frame))
    }

    /// The collector is stopping: take no new batches, ack those being processed, then close.
    public mutating func shutdown(retryAfterMilliseconds: UInt32) -> Action {
        let goaway = Frame.goaway(
            GoAway(code: WireErrorCode.shuttingDown.rawValue, retryAfterMilliseconds: retryAfterMilliseconds, message: "collector shutting down"))
        switch state {
        case .ready(let agentId, let key):
            state = .goingAway(agentId: agentId, key: key)
            if inFlight.isEmpty {
                state = .closed
                return .sendAndClose(goaway)
            }
            return .send(goaway)
        case .closed, .goingAway:
            return .none
        case .awaitingHello, .awaitingAuth:
            state = .closed
            return .sendAndClose(.error(WireError(.shuttingDown, "collector shutting down").frame))
        }
    }

    /// Bytes arrived from the agent at `now` (any bytes: a frame in progress is not silence).
    public mutating func heard(now: ContinuousClock.Instant) {
        lastHeard = now
        pinged = false
    }

    /// Time passed: a handshake that took too long or a silence that lasted too long closes the
    /// connection with `timeout`; an open session silent for `pingAfter` gets one ping.
    public mutating func tick(now: ContinuousClock.Instant) -> Action {
        let liveness = configuration.liveness
        switch state {
        case .closed:
            return .none
        case .awaitingHello, .awaitingAuth:
            guard now - openedAt >= liveness.handshakeTimeout else { return .none }
            return fail(.timeout, "no handshake within \(DurationText.format(liveness.handshakeTimeout)): closing")
        case .ready, .goingAway:
            let silence = now - lastHeard
            if silence >= liveness.idleTimeout {
                return fail(.timeout, "nothing heard for \(DurationText.format(silence)): closing")
            }
            guard silence >= liveness.pingAfter, !pinged else { return .none }
            pinged = true
            pings &+= 1
            return .send(.ping(pings))
        }
    }

    public mutating func connectionClosed() {
        state = .closed
        inFlight.removeAll()
        copiesInFlight = 0
        unacked.removeAll()
    }

    /// One copy of `sequence` is done; false if none was in flight.
    @discardableResult
    private mutating func removeCopy(of sequence: UInt64) -> Bool {
        guard let copies = inFlight[sequence] else { return false }
        inFlight[sequence] = copies > 1 ? copies - 1 : nil
        copiesInFlight -= 1
        return true
    }

    private mutating func fail(_ code: WireErrorCode, _ message: String) -> Action {
        state = .closed
        return .sendAndClose(.error(WireError(code, message).frame))
    }
}
