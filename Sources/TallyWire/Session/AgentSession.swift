public import NIOCore
public import TallyCore

/// The agent's side of one collector relationship, as a value-type state machine (SPEC.md §4,
/// §6, §8): handshake, a window of unacknowledged batches, goaway, and reconnects. The channel
/// handler feeds it inputs and carries out the ``Action`` each returns; it does no I/O itself.
///
/// Guarantees: a batch leaves ``unacknowledged`` only when an ack for its sequence that
/// accounts for all its events arrives; after a reconnect every unacknowledged batch is sent
/// again, in sequence order, before any newer one; never more than the window is in flight.
public struct AgentSession: Sendable {
    /// Who the agent is and how it proves it.
    public struct Configuration: Sendable {
        public var agentId: String
        /// The agent's secret key; nil for an agent without one (only open collectors accept it).
        public var secret: [UInt8]?
        public var versions: ClosedRange<UInt16>
        public var software: String
        /// The most batches the agent itself keeps in flight (the collector's window also applies).
        public var window: Int

        public init(
            agentId: String, secret: [UInt8]?, versions: ClosedRange<UInt16> = Handshake.supportedVersions,
            software: String = "tally-agent", window: Int = Int(SessionLimits.standard.window)
        ) {
            self.agentId = agentId
            self.secret = secret
            self.versions = versions
            self.software = software
            self.window = window
        }
    }

    /// A batch waiting to be sent or acknowledged.
    public struct OutgoingBatch: Sendable, Hashable {
        public var sequence: UInt64
        public var eventCount: UInt32
        public var payload: ByteBuffer

        public init(sequence: UInt64, eventCount: UInt32, payload: ByteBuffer) {
            self.sequence = sequence
            self.eventCount = eventCount
            self.payload = payload
        }

        /// The batch of `events`, encoded with `encoder`.
        public init(sequence: UInt64, events: [UsageEvent], encoder: BatchPayloadEncoder) throws(WireError) {
            self.init(sequence: sequence, eventCount: UInt32(truncatingIfNeeded: events.count), payload: try encoder.encode(events))
        }

        /// The batch of `events` (stored records, as the shipper reads them), encoded with `encoder`.
        public init(sequence: UInt64, events: EventSpans, encoder: BatchPayloadEncoder) throws(WireError) {
            self.init(sequence: sequence, eventCount: UInt32(truncatingIfNeeded: events.count), payload: try encoder.encode(events))
        }

        var frame: Frame { .batch(Batch(sequence: sequence, payload: payload)) }
    }

    /// What the caller must do next.
    public enum Action: Sendable, Hashable {
        case none
        /// Write these frames, in order.
        case send([Frame])
        /// The collector committed this batch: its spool data may go. Then write `send`.
        case acknowledged(BatchAck, send: [Frame])
        /// The peer broke the protocol: write `error.frame`, then close; reconnect later.
        case sendErrorAndClose(WireError)
        /// Close the connection and reconnect after `retryAfterMilliseconds` (nil: the caller's
        /// own backoff; a non-retryable error usually needs an operator, so back off long).
        case close(WireError, retryAfterMilliseconds: UInt32?)
    }

    enum State: Sendable {
        case disconnected
        case awaitingChallenge(agentNonce: Nonce)
        case awaitingWelcome(version: UInt16, agentNonce: Nonce, collectorNonce: Nonce)
        case ready(version: UInt16, limits: SessionLimits)
        /// Goaway received: send nothing new, take the remaining acks, wait for the close.
        case draining(GoAway)
    }

    public let configuration: Configuration
    private var state: State = .disconnected
    /// Not yet sent on this connection, in sequence order.
    private var queued: [OutgoingBatch] = []
    /// Sent on this connection and not yet acknowledged, in sequence order.
    private var inFlight: [OutgoingBatch] = []
    /// Acks for sequences not in flight (answers to a batch already acked): ignored, counted.
    public private(set) var ignoredAcks = 0

    public init(configuration: Configuration) {
        self.configuration = configuration
    }

    /// Every batch not yet acknowledged, in sequence order.
    public var unacknowledged: [OutgoingBatch] { (inFlight + queued).sorted { $0.sequence < $1.sequence } }

    /// Whether the handshake is done and batches may flow.
    public var isReady: Bool {
        if case .ready = state { return true }
        return false
    }

    /// The limits the collector announced, once welcomed.
    public var limits: SessionLimits? {
        if case .ready(_, let limits) = state { return limits }
        return nil
    }

    /// A new connection is up: say hello.
    public mutating func connected(agentNonce: Nonce) -> Action {
        requeueInFlight()
        state = .awaitingChallenge(agentNonce: agentNonce)
        return .send([
            .hello(
                Hello(
                    minVersion: configuration.versions.lowerBound, maxVersion: configuration.versions.upperBound,
                    agentId: configuration.agentId, agentNonce: agentNonce, software: configuration.software))
        ])
    }

    /// The connection is gone (closed, cut, or timed out). Everything in flight will be sent
    /// again on the next connection.
    public mutating func connectionClosed() {
        requeueInFlight()
        state = .disconnected
    }

    /// A new batch from the spool. Sequences must increase; they are the batch's identity.
    public mutating func enqueue(_ batch: OutgoingBatch) -> Action {
        queued.append(batch)
        if queued.count > 1 && queued[queued.count - 2].sequence > batch.sequence {
            queued.sort { $0.sequence < $1.sequence }
        }
        return .send(fillWindow()).orNone
    }

    /// A frame arrived.
    public mutating func received(_ frame: Frame) -> Action {
        switch (state, frame) {
        case (_, .error(let error)):
            let wireError = error.wireError ?? WireError(.internalError, "collector error code \(error.code): \(error.message)")
            connectionClosed()
            return .close(wireError, retryAfterMilliseconds: nil)
        case (.awaitingChallenge(let agentNonce), .challenge(let challenge)):
            guard configuration.versions.contains(challenge.version) else {
                return fail(.unsupportedVersion, "the collector chose version \(challenge.version); this agent speaks \(configuration.versions)")
            }
            let proof = Handshake.agentProof(
                secret: configuration.secret ?? [], version: challenge.version, agentId: configuration.agentId,
                agentNonce: agentNonce, collectorNonce: challenge.collectorNonce)
            state = .awaitingWelcome(version: challenge.version, agentNonce: agentNonce, collectorNonce: challenge.collectorNonce)
            return .send([.auth(Auth(proof: proof))])
        case (.awaitingWelcome(let version, let agentNonce, let collectorNonce), .welcome(let welcome)):
            guard welcome.version == version else {
                return fail(.unexpectedFrame, "the welcome names version \(welcome.version), the challenge \(version)")
            }
            if let secret = configuration.secret {
                let expected = Handshake.collectorProof(
                    secret: secret, version: version, agentId: configuration.agentId, agentNonce: agentNonce,
                    collectorNonce: collectorNonce)
                guard welcome.authenticated, Handshake.verify(welcome.proof, expected: expected) else {
                    return fail(.authenticationFailed, "the collector did not prove that it knows this agent's key")
                }
            }
            state = .ready(version: version, limits: welcome.limits)
            return Action.send(fillWindow()).orNone
        case (.ready, .ack(let ack)), (.draining, .ack(let ack)):
            return acknowledge(ack)
        case (.ready, .ping(let opaque)), (.draining, .ping(let opaque)):
            return .send([.pong(opaque)])
        case (.ready, .pong), (.draining, .pong):
            return .none
        case (.ready, .goaway(let goaway)), (.draining, .goaway(let goaway)):
            state = .draining(goaway)
            if inFlight.isEmpty {
                connectionClosed()
                return .close(Self.goawayError(goaway), retryAfterMilliseconds: goaway.retryAfterMilliseconds)
            }
            return .none
        case (.disconnected, _):
            return .none
        default:
            return fail(.unexpectedFrame, "a frame of type \(frame.type) is not expected now")
        }
    }

    private mutating func acknowledge(_ ack: BatchAck) -> Action {
        guard let position = inFlight.firstIndex(where: { $0.sequence == ack.sequence }) else {
            ignoredAcks += 1
            return .none
        }
        let batch = inFlight[position]
        if ack.status == .committed && ack.eventCount != UInt64(batch.eventCount) {
            return fail(.unexpectedFrame, "the ack of batch \(ack.sequence) counts \(ack.eventCount) events; it has \(batch.eventCount)")
        }
        inFlight.remove(at: position)
        // While draining, fillWindow sends nothing; once ``isDrained``, the caller may close.
        return .acknowledged(ack, send: fillWindow())
    }

    /// Whether a goaway has been received and every batch sent on this connection is settled:
    /// the caller may close and reconnect after ``retryAfterMilliseconds``.
    public var isDrained: Bool {
        if case .draining = state { return inFlight.isEmpty }
        return false
    }

    /// The delay a goaway asked for.
    public var retryAfterMilliseconds: UInt32? {
        if case .draining(let goaway) = state { return goaway.retryAfterMilliseconds }
        return nil
    }

    private mutating func fillWindow() -> [Frame] {
        guard case .ready(_, let limits) = state else { return [] }
        let window = max(1, min(configuration.window, Int(limits.window)))
        var frames: [Frame] = []
        while inFlight.count < window, !queued.isEmpty {
            let batch = queued.removeFirst()
            inFlight.append(batch)
            frames.append(batch.frame)
        }
        return frames
    }

    private mutating func requeueInFlight() {
        queued = (inFlight + queued).sorted { $0.sequence < $1.sequence }
        inFlight = []
    }

    private mutating func fail(_ code: WireErrorCode, _ message: String) -> Action {
        connectionClosed()
        return .sendErrorAndClose(WireError(code, message))
    }

    private static func goawayError(_ goaway: GoAway) -> WireError {
        WireError(WireErrorCode(rawValue: goaway.code) ?? .shuttingDown, "goaway: \(goaway.message)")
    }
}

extension AgentSession.Action {
    var orNone: Self {
        if case .send(let frames) = self, frames.isEmpty { return .none }
        return self
    }
}
