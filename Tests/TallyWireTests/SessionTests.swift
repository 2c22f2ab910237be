import NIOCore
import Testing
import TallyCore
@testable import TallyWire

@Suite struct SessionTests {
    let secret = Array("s3cret".utf8)
    let agentNonce = Fixtures.nonce(1)
    let collectorNonce = Fixtures.nonce(2)

    func agent(secret: [UInt8]? = Array("s3cret".utf8), window: Int = 8) -> AgentSession {
        AgentSession(configuration: .init(agentId: "agent-eu-1", secret: secret, window: window))
    }

    func collector(keys: [String: AgentKey]? = nil, window: UInt16 = 8) -> CollectorSession {
        var limits = SessionLimits.standard
        limits.window = window
        let keyring = AgentKeyring(keys: keys ?? ["agent-eu-1": AgentKey(secret: secret)])
        return CollectorSession(configuration: .init(keyring: keyring, limits: limits), collectorNonce: collectorNonce)
    }

    func batch(_ sequence: UInt64, events: UInt32 = 3) -> AgentSession.OutgoingBatch {
        AgentSession.OutgoingBatch(sequence: sequence, eventCount: events, payload: ByteBuffer(bytes: [UInt8(truncatingIfNeeded: sequence)]))
    }

    /// Runs the handshake through real encode/decode; returns the frames the agent sent after welcome.
    func handshake(_ agent: inout AgentSession, _ collector: inout CollectorSession) throws -> [Frame] {
        guard case .send(let hello) = agent.connected(agentNonce: agentNonce) else {
            Issue.record("no hello")
            return []
        }
        guard case .send(let challenge) = collector.received(try wire(hello[0])) else {
            Issue.record("no challenge")
            return []
        }
        guard case .send(let auth) = agent.received(try wire(challenge)) else {
            Issue.record("no auth")
            return []
        }
        guard case .send(let welcome) = collector.received(try wire(auth[0])) else {
            Issue.record("no welcome")
            return []
        }
        switch agent.received(try wire(welcome)) {
        case .send(let frames): return frames
        case .none: return []
        case let other:
            Issue.record("unexpected \(other)")
            return []
        }
    }

    /// The frame after a trip through the encoder and decoder.
    func wire(_ frame: Frame) throws -> Frame {
        var buffer = try FrameEncoder().encode(frame)
        var decoder = FrameDecoder()
        return try #require(try decoder.decode(buffer: &buffer))
    }

    @Test func handshakeSucceedsAndBatchesFlow() throws {
        var agent = agent()
        var collector = collector()
        #expect(collector.maxInboundFrameBody == FrameLayout.handshakeMaxBody)
        _ = agent.enqueue(batch(1))
        let sent = try handshake(&agent, &collector)
        #expect(agent.isReady)
        #expect(collector.agentId == "agent-eu-1")
        #expect(collector.maxInboundFrameBody == Int(SessionLimits.standard.maxFrameBody))
        #expect(sent == [.batch(Batch(sequence: 1, payload: ByteBuffer(bytes: [1])))])
        #expect(collector.received(try wire(sent[0])) == .process(Batch(sequence: 1, payload: ByteBuffer(bytes: [1]))))
        let ack = BatchAck(sequence: 1, accepted: 3)
        #expect(collector.batchCompleted(ack) == .send(.ack(ack)))
        #expect(agent.received(try wire(.ack(ack))) == .acknowledged(ack, send: []))
        #expect(agent.unacknowledged.isEmpty)
    }

    @Test func withClientCertificatesTheHelloMustNameTheCertificatesAgent() throws {
        let keyring = AgentKeyring(keys: ["agent-eu-1": AgentKey(secret: secret)])
        func certified(_ names: Set<String>?) -> CollectorSession {
            var session = CollectorSession(
                configuration: .init(keyring: keyring, requiresCertificateIdentity: true), collectorNonce: collectorNonce)
            #expect(session.awaitsCertificate)
            if let names { session.peerCertified(names: names) }
            return session
        }
        // The certificate names the agent (as CN or DNS name): the handshake runs, key proof included.
        var named = agent()
        var collector = certified(["agent-eu-1", "edge.example"])
        #expect(!collector.awaitsCertificate)
        _ = try handshake(&named, &collector)
        #expect(collector.agentId == "agent-eu-1")
        // Another agent's certificate, or none: refused at the hello, before any challenge.
        for names: Set<String>? in [["agent-us-2"], nil] {
            var stranger = agent()
            var collector = certified(names)
            guard case .send(let hello) = stranger.connected(agentNonce: agentNonce),
                case .sendAndClose(.error(let error)) = collector.received(try wire(hello[0]))
            else {
                Issue.record("a hello that the certificate does not name was accepted")
                continue
            }
            #expect(error.code == WireErrorCode.authenticationFailed.rawValue && error.message.contains("agent-eu-1"))
            #expect(collector.agentId == nil)
        }
    }

    @Test func wrongKeyFailsAuthentication() throws {
        var agent = agent(secret: Array("wrong".utf8))
        var collector = collector()
        guard case .send(let hello) = agent.connected(agentNonce: agentNonce),
            case .send(let challenge) = collector.received(hello[0]),
            case .send(let auth) = agent.received(challenge)
        else {
            Issue.record("handshake broke early")
            return
        }
        guard case .sendAndClose(.error(let error)) = collector.received(auth[0]) else {
            Issue.record("wrong proof accepted")
            return
        }
        #expect(error.code == WireErrorCode.authenticationFailed.rawValue)
        #expect(collector.agentId == nil)
        #expect(collector.received(.batch(Batch(sequence: 1, payload: ByteBuffer()))) == .none)
        guard case .close(let seen, _) = agent.received(.error(error)) else {
            Issue.record("agent did not close")
            return
        }
        #expect(seen.code == .authenticationFailed && !seen.isRetryable)
    }

    @Test func impostorCollectorIsRefused() throws {
        var agent = agent()
        // A collector that does not know the key: it cannot produce the collector proof.
        var impostor = collector(keys: ["agent-eu-1": AgentKey(secret: Array("other".utf8))])
        guard case .send(let hello) = agent.connected(agentNonce: agentNonce),
            case .send(let challenge) = impostor.received(hello[0]),
            case .send = agent.received(challenge)
        else {
            Issue.record("handshake broke early")
            return
        }
        let forged = Welcome(
            authenticated: true, version: 1,
            proof: Handshake.collectorProof(
                secret: Array("other".utf8), version: 1, agentId: "agent-eu-1", agentNonce: agentNonce, collectorNonce: collectorNonce),
            limits: .standard)
        guard case .sendErrorAndClose(let error) = agent.received(.welcome(forged)) else {
            Issue.record("forged welcome accepted")
            return
        }
        #expect(error.code == .authenticationFailed)
        // An open (unauthenticated) welcome is refused by an agent that has a key.
        var again = self.agent()
        _ = again.connected(agentNonce: agentNonce)
        _ = again.received(.challenge(Challenge(version: 1, collectorNonce: collectorNonce)))
        guard case .sendErrorAndClose = again.received(.welcome(Welcome(authenticated: false, version: 1, proof: .none, limits: .standard))) else {
            Issue.record("open welcome accepted by a keyed agent")
            return
        }
    }

    @Test func unknownAgentIsRefused() {
        var collector = collector(keys: ["someone-else": AgentKey(secret: secret)])
        let hello = Hello(minVersion: 1, maxVersion: 1, agentId: "agent-eu-1", agentNonce: agentNonce, software: "t")
        guard case .sendAndClose(.error(let error)) = collector.received(.hello(hello)) else {
            Issue.record("accepted")
            return
        }
        #expect(error.wireError?.code == .unknownAgent)
    }

    @Test func openCollectorAcceptsAnAgentWithoutKey() throws {
        var agent = agent(secret: nil)
        var collector = CollectorSession(configuration: .init(keyring: AgentKeyring()), collectorNonce: collectorNonce)
        _ = try handshake(&agent, &collector)
        #expect(agent.isReady)
        #expect(collector.agentId == "agent-eu-1")
        #expect(collector.admits(tenant: "anyone"))
    }

    @Test func versionNegotiation() {
        #expect(Handshake.negotiate(agent: 1...3, collector: 1...2) == 2)
        #expect(Handshake.negotiate(agent: 2...3, collector: 1...1) == nil)
        var collector = collector()
        let hello = Hello(minVersion: 2, maxVersion: 5, agentId: "agent-eu-1", agentNonce: agentNonce, software: "t")
        guard case .sendAndClose(.error(let error)) = collector.received(.hello(hello)) else {
            Issue.record("accepted")
            return
        }
        #expect(error.wireError?.code == .unsupportedVersion)
        var agent = agent()
        _ = agent.connected(agentNonce: agentNonce)
        guard case .sendErrorAndClose(let refused) = agent.received(.challenge(Challenge(version: 9, collectorNonce: collectorNonce))) else {
            Issue.record("agent accepted an unknown version")
            return
        }
        #expect(refused.code == .unsupportedVersion)
    }

    @Test func tenantAllowList() throws {
        var agent = agent()
        var collector = collector(keys: ["agent-eu-1": AgentKey(secret: secret, allowedTenants: ["acme"])])
        #expect(!collector.admits(tenant: "acme"))  // not before authentication
        _ = try handshake(&agent, &collector)
        #expect(collector.admits(tenant: "acme"))
        #expect(!collector.admits(tenant: "globex"))
    }

    @Test func windowLimitsBatchesInFlight() throws {
        var agent = agent(window: 2)
        var collector = collector(window: 2)
        let sent = try handshake(&agent, &collector)
        #expect(sent.isEmpty)
        #expect(agent.enqueue(batch(1)) == .send([batch(1).frameForTest]))
        #expect(agent.enqueue(batch(2)) == .send([batch(2).frameForTest]))
        #expect(agent.enqueue(batch(3)) == .none)
        #expect(agent.enqueue(batch(4)) == .none)
        // Acks out of order: 2 first frees one slot, which goes to 3.
        #expect(
            agent.received(.ack(BatchAck(sequence: 2, accepted: 3)))
                == .acknowledged(BatchAck(sequence: 2, accepted: 3), send: [batch(3).frameForTest]))
        #expect(agent.unacknowledged.map(\.sequence) == [1, 3, 4])
        // The collector refuses a third concurrent batch from a misbehaving agent.
        #expect(collector.received(batch(1).frameForTest) == .process(Batch(sequence: 1, payload: batch(1).payload)))
        #expect(collector.received(batch(2).frameForTest) == .process(Batch(sequence: 2, payload: batch(2).payload)))
        guard case .sendAndClose(.error(let error)) = collector.received(batch(3).frameForTest) else {
            Issue.record("window ignored")
            return
        }
        #expect(error.wireError?.code == .windowExceeded)
    }

    /// A resend of a batch still being processed (a proxy that repeats a frame) is handed out
    /// again without taking a slot of the window, and each copy gets its own ack; a goaway waits
    /// for both.
    @Test func aCopyOfABatchInFlightIsProcessedAgainAndTakesNoSlot() throws {
        var agent = agent(window: 2)
        var collector = collector(window: 2)
        _ = try handshake(&agent, &collector)
        let one = Batch(sequence: 1, payload: batch(1).payload)
        #expect(collector.received(batch(1).frameForTest) == .process(one))
        #expect(collector.received(batch(1).frameForTest) == .process(one))
        #expect(collector.received(batch(2).frameForTest) == .process(Batch(sequence: 2, payload: batch(2).payload)))
        #expect(collector.batchesInFlight == 3)
        guard case .sendAndClose(.error(let error)) = collector.received(batch(3).frameForTest) else {
            Issue.record("a third sequence went past a window of 2")
            return
        }
        #expect(error.wireError?.code == .windowExceeded)

        var draining = self.collector(window: 2)
        _ = try handshake(&agent, &draining)
        _ = draining.received(batch(1).frameForTest)
        _ = draining.received(batch(1).frameForTest)
        guard case .send(.goaway) = draining.shutdown(retryAfterMilliseconds: 10) else {
            Issue.record("no goaway")
            return
        }
        let ack = BatchAck(sequence: 1, accepted: 3)
        #expect(draining.batchCompleted(ack) == .send(.ack(ack)))
        #expect(draining.batchCompleted(ack) == .sendAndClose(.ack(ack)))
        #expect(draining.batchCompleted(ack) == .none)
    }

    /// The window is the agent's: a sequence leaves it with its first ack. A proxy that repeated
    /// batch 1 leaves a copy in processing after batch 1 is acked; the agent fills the freed slot
    /// with batch 3, and the collector must take it (it once counted the copy as a third sequence
    /// and refused the agent with `window_exceeded`, which stopped a chaos run's drain). The next
    /// new sequence is still refused, and the late copy is acked on its own.
    @Test func aSequenceLeavesTheWindowWithItsFirstAckWhileACopyIsStillInProcessing() throws {
        var agent = agent(window: 2)
        var collector = collector(window: 2)
        _ = try handshake(&agent, &collector)
        #expect(agent.enqueue(batch(1)) == .send([batch(1).frameForTest]))
        #expect(agent.enqueue(batch(2)) == .send([batch(2).frameForTest]))
        #expect(agent.enqueue(batch(3)) == .none)
        let one = Batch(sequence: 1, payload: batch(1).payload)
        #expect(collector.received(batch(1).frameForTest) == .process(one))
        #expect(collector.received(batch(1).frameForTest) == .process(one))  // the proxy's copy
        #expect(collector.received(batch(2).frameForTest) == .process(Batch(sequence: 2, payload: batch(2).payload)))
        let ack = BatchAck(sequence: 1, accepted: 3)
        #expect(collector.batchCompleted(ack) == .send(.ack(ack)))
        // The agent takes the ack and sends batch 3 into the freed slot.
        #expect(agent.received(.ack(ack)) == .acknowledged(ack, send: [batch(3).frameForTest]))
        #expect(collector.received(batch(3).frameForTest) == .process(Batch(sequence: 3, payload: batch(3).payload)))
        #expect(collector.batchesInFlight == 3)
        // The copy of 1 completes on its own; the agent ignores its ack.
        #expect(collector.batchCompleted(ack) == .send(.ack(ack)))
        #expect(agent.received(.ack(ack)) == .none)
        // Batches 2 and 3 fill the window: a fourth sequence is refused.
        guard case .sendAndClose(.error(let error)) = collector.received(batch(4).frameForTest) else {
            Issue.record("a third unacked sequence went past a window of 2")
            return
        }
        #expect(error.wireError?.code == .windowExceeded)
    }

    /// Copies take no slot, yet they are bounded: an authenticated agent (or a proxy) repeating
    /// one frame gets `window_exceeded` once twice the window is unacknowledged, copies included,
    /// instead of queueing work without end. A completed copy frees its place again.
    @Test func copiesOfABatchInFlightAreBoundedByTwiceTheWindow() throws {
        var agent = agent(window: 2)
        var collector = collector(window: 2)
        _ = try handshake(&agent, &collector)
        let one = Batch(sequence: 1, payload: batch(1).payload)
        for _ in 1...4 { #expect(collector.received(batch(1).frameForTest) == .process(one)) }
        #expect(collector.batchesInFlight == 4)
        // One copy done: its place is free again, and the count follows.
        let ack = BatchAck(sequence: 1, accepted: 3)
        #expect(collector.batchCompleted(ack) == .send(.ack(ack)))
        #expect(collector.batchesInFlight == 3)
        #expect(collector.received(batch(1).frameForTest) == .process(one))
        guard case .sendAndClose(.error(let error)) = collector.received(batch(1).frameForTest) else {
            Issue.record("a fifth copy went past twice a window of 2")
            return
        }
        #expect(error.wireError?.code == .windowExceeded)
        #expect(error.wireError?.message.contains("copies") == true)
    }

    @Test func ackWithWrongCountsIsAProtocolViolation() throws {
        var agent = agent()
        var collector = collector()
        _ = try handshake(&agent, &collector)
        _ = agent.enqueue(batch(1, events: 3))
        guard case .sendErrorAndClose(let error) = agent.received(.ack(BatchAck(sequence: 1, accepted: 2))) else {
            Issue.record("short ack accepted")
            return
        }
        #expect(error.code == .unexpectedFrame)
        #expect(agent.unacknowledged.map(\.sequence) == [1])  // still owed
    }

    @Test func reconnectResendsEveryUnackedBatchInOrder() throws {
        var agent = agent(window: 3)
        var collector = collector()
        _ = try handshake(&agent, &collector)
        for sequence in 1...5 { _ = agent.enqueue(batch(UInt64(sequence))) }
        _ = agent.received(.ack(BatchAck(sequence: 2, accepted: 3)))  // 1, 3, 4 in flight; 5 queued
        agent.connectionClosed()  // the ack for 1 was lost with the connection
        #expect(agent.unacknowledged.map(\.sequence) == [1, 3, 4, 5])
        var next = self.collector()
        let resent = try handshake(&agent, &next)
        #expect(resent == [batch(1).frameForTest, batch(3).frameForTest, batch(4).frameForTest])
        // The collector answers the known batch with its original ack; the agent settles it.
        let original = BatchAck(sequence: 1, accepted: 2, duplicate: 1)
        #expect(agent.received(.ack(original)) == .acknowledged(original, send: [batch(5).frameForTest]))
    }

    @Test func duplicateAckIsIgnored() throws {
        var agent = agent()
        var collector = collector()
        _ = try handshake(&agent, &collector)
        _ = agent.enqueue(batch(1))
        let ack = BatchAck(sequence: 1, accepted: 3)
        #expect(agent.received(.ack(ack)) == .acknowledged(ack, send: []))
        #expect(agent.received(.ack(ack)) == .none)
        #expect(agent.ignoredAcks == 1)
        // An ack for a sequence never sent changes nothing either.
        #expect(agent.received(.ack(BatchAck(sequence: 99, accepted: 3))) == .none)
    }

    @Test func goawayDrainsThenReconnects() throws {
        var agent = agent(window: 2)
        var collector = collector()
        _ = try handshake(&agent, &collector)
        for sequence in 1...3 { _ = agent.enqueue(batch(UInt64(sequence))) }
        _ = collector.received(batch(1).frameForTest)
        _ = collector.received(batch(2).frameForTest)
        guard case .send(let goaway) = collector.shutdown(retryAfterMilliseconds: 250) else {
            Issue.record("no goaway")
            return
        }
        #expect(collector.received(batch(3).frameForTest) == .dropBatch(sequence: 3))  // after goaway: not processed
        #expect(agent.received(goaway) == .none)
        #expect(agent.enqueue(batch(4)) == .none)  // nothing new while draining
        let first = BatchAck(sequence: 1, accepted: 3)
        #expect(collector.batchCompleted(first) == .send(.ack(first)))
        #expect(agent.received(.ack(first)) == .acknowledged(first, send: []))
        #expect(!agent.isDrained)
        let second = BatchAck(sequence: 2, accepted: 3)
        #expect(collector.batchCompleted(second) == .sendAndClose(.ack(second)))
        #expect(agent.received(.ack(second)) == .acknowledged(second, send: []))
        #expect(agent.isDrained)
        #expect(agent.retryAfterMilliseconds == 250)
        agent.connectionClosed()
        #expect(agent.unacknowledged.map(\.sequence) == [3, 4])
    }

    @Test func goawayWithNothingInFlightClosesAtOnce() throws {
        var agent = agent()
        var collector = collector()
        _ = try handshake(&agent, &collector)
        guard case .sendAndClose(let goaway) = collector.shutdown(retryAfterMilliseconds: 100) else {
            Issue.record("no goaway")
            return
        }
        guard case .close(let error, let delay) = agent.received(goaway) else {
            Issue.record("agent stayed")
            return
        }
        #expect(error.code == .shuttingDown && error.isRetryable)
        #expect(delay == 100)
    }

    @Test func framesOutOfTurnAreRefused() {
        var collector = collector()
        guard case .sendAndClose(.error(let error)) = collector.received(.batch(Batch(sequence: 1, payload: ByteBuffer()))) else {
            Issue.record("batch before hello accepted")
            return
        }
        #expect(error.wireError?.code == .unexpectedFrame)
        var agent = agent()
        _ = agent.connected(agentNonce: agentNonce)
        guard case .sendErrorAndClose(let refused) = agent.received(.ack(BatchAck(sequence: 1, accepted: 1))) else {
            Issue.record("ack before welcome accepted")
            return
        }
        #expect(refused.code == .unexpectedFrame)
    }

    @Test func pingPong() throws {
        var agent = agent()
        var collector = collector()
        _ = try handshake(&agent, &collector)
        #expect(collector.received(.ping(5)) == .send(.pong(5)))
        #expect(agent.received(.ping(6)) == .send([.pong(6)]))
        #expect(agent.received(.pong(5)) == .none)
    }

    @Test func storeFailureClosesWithARetryableError() throws {
        var agent = agent()
        var collector = collector()
        _ = try handshake(&agent, &collector)
        _ = agent.enqueue(batch(1))
        _ = collector.received(batch(1).frameForTest)
        guard case .sendAndClose(let frame) = collector.batchFailed(sequence: 1, error: WireError(.internalError, "disk full")) else {
            Issue.record("no error")
            return
        }
        guard case .close(let error, _) = agent.received(frame) else {
            Issue.record("agent stayed")
            return
        }
        #expect(error.isRetryable)
        #expect(agent.unacknowledged.map(\.sequence) == [1])
    }
}

/// Time and silence as inputs of the collector's session (SPEC §3, §8): each rule decided by the
/// machine, tested with an explicit clock.
@Suite struct CollectorLivenessRuleTests {
    let start = ContinuousClock.now
    let liveness = CollectorSession.Liveness(pingAfter: .seconds(30), idleTimeout: .seconds(90), handshakeTimeout: .seconds(10))

    func session() -> CollectorSession {
        CollectorSession(configuration: .init(keyring: AgentKeyring(), liveness: liveness), collectorNonce: Fixtures.nonce(2), now: start)
    }

    func open(_ session: inout CollectorSession) {
        _ = session.received(.hello(Hello(minVersion: 1, maxVersion: 1, agentId: "a", agentNonce: Fixtures.nonce(1), software: "test")))
        _ = session.received(.auth(Auth(proof: .none)))
        #expect(session.agentId == "a")
    }

    func at(_ seconds: Int64) -> ContinuousClock.Instant { start + .seconds(seconds) }

    @Test func noPingBeforeTheHandshakeAndATimeoutWhenItTakesTooLong() {
        var session = session()
        #expect(session.tick(now: at(9)) == .none)
        _ = session.received(.hello(Hello(minVersion: 1, maxVersion: 1, agentId: "a", agentNonce: Fixtures.nonce(1), software: "test")))
        // Silent past pingAfter mid-handshake: still no ping (an agent must not get frames
        // before welcome), but the handshake deadline closes it with `timeout`.
        guard case .sendAndClose(.error(let error)) = session.tick(now: at(10)) else {
            Issue.record("the handshake deadline did not close the connection")
            return
        }
        #expect(error.code == WireErrorCode.timeout.rawValue)
        #expect(session.tick(now: at(40)) == .none)
    }

    @Test func anOpenSessionIsPingedOncePerSilence() {
        var session = session()
        open(&session)
        session.heard(now: at(5))
        #expect(session.tick(now: at(34)) == .none)
        #expect(session.tick(now: at(35)) == .send(.ping(1)))
        #expect(session.tick(now: at(50)) == .none)
        // A pong (any bytes) ends the silence; the next one gets the next ping.
        session.heard(now: at(51))
        #expect(session.received(.pong(1)) == .none)
        #expect(session.tick(now: at(81)) == .send(.ping(2)))
    }

    @Test func aSilentSessionIsClosedWithTimeout() {
        var session = session()
        open(&session)
        _ = session.tick(now: at(30))
        guard case .sendAndClose(.error(let error)) = session.tick(now: at(90)) else {
            Issue.record("a silent session stayed open")
            return
        }
        #expect(error.code == WireErrorCode.timeout.rawValue)
        #expect(session.received(.batch(Batch(sequence: 1, payload: ByteBuffer()))) == .none)
    }

    @Test func bytesKeepASessionAlive() {
        var session = session()
        open(&session)
        for second in stride(from: Int64(20), through: 600, by: 20) {
            session.heard(now: at(second))
            #expect(session.tick(now: at(second + 19)) == .none)
        }
    }

    /// Shutdown while a batch is being committed: goaway now, the batch's ack later, then close;
    /// a batch that arrives after the goaway is dropped, never processed.
    @Test func shutdownAcksWhatIsInFlightAndDropsTheRest() {
        var session = session()
        open(&session)
        #expect(session.received(.batch(Batch(sequence: 7, payload: ByteBuffer()))) == .process(Batch(sequence: 7, payload: ByteBuffer())))
        guard case .send(.goaway(let goaway)) = session.shutdown(retryAfterMilliseconds: 500) else {
            Issue.record("no goaway")
            return
        }
        #expect(goaway.code == WireErrorCode.shuttingDown.rawValue && goaway.retryAfterMilliseconds == 500)
        #expect(session.received(.batch(Batch(sequence: 8, payload: ByteBuffer()))) == .dropBatch(sequence: 8))
        #expect(session.shutdown(retryAfterMilliseconds: 500) == .none)
        let ack = BatchAck(sequence: 7, accepted: 1)
        #expect(session.batchCompleted(ack) == .sendAndClose(.ack(ack)))
    }
}

extension AgentSession.OutgoingBatch {
    var frameForTest: Frame { .batch(Batch(sequence: sequence, payload: payload)) }
}
