import Logging
import NIOCore
import TallyCore
import TallyTLS
import TallyWire

/// What one agent connection's loop does with each of its inputs — bytes in, a clock tick, the
/// collector's shutdown — all fed to the ``CollectorSession`` state machine, whose actions it
/// carries out in one place (``carryOut(_:send:)``). It decides nothing itself.
struct AgentConnection {
    private var session: CollectorSession
    private var decoder: FrameDecoder
    private var buffered = ByteBuffer()
    private let ingest: BatchIngest
    private let pipeline: BatchPipeline
    private let encoder = FrameEncoder()
    private let metrics: CollectorMetrics
    private let logger: Logger
    private let peerIsLoopback: Bool
    private let isTLS: Bool
    private let allowPlaintextRemote: Bool
    private let goawayRetryAfter: UInt32

    init(
        settings: ProtocolServer.Settings, ledger: Ledger, metrics: CollectorMetrics, logger: Logger,
        peerIsLoopback: Bool, completions: AsyncStream<ProtocolServer.ConnectionEvent>.Continuation
    ) throws {
        session = CollectorSession(
            configuration: .init(
                keyring: settings.keyring, limits: settings.limits,
                requiresCertificateIdentity: settings.tls?.requiresClientCertificate ?? false,
                liveness: .init(pingAfter: settings.pingAfter, idleTimeout: settings.idleTimeout, handshakeTimeout: settings.handshakeTimeout)),
            collectorNonce: Nonce.random())
        goawayRetryAfter = UInt32(clamping: settings.goawayRetryAfter.microseconds / 1000)
        decoder = FrameDecoder(maxBodyLength: session.maxInboundFrameBody)
        ingest = try BatchIngest(limits: settings.limits, eventLimits: settings.eventLimits, ledger: ledger, metrics: metrics)
        pipeline = BatchPipeline(ingest: ingest, completions: completions)
        self.metrics = metrics
        self.logger = logger
        self.peerIsLoopback = peerIsLoopback
        self.isTLS = settings.tls != nil
        self.allowPlaintextRemote = settings.allowPlaintextRemote
    }

    /// Plain TCP is for loopback peers unless the config allows it; with no agent keys
    /// configured, only loopback peers may connect.
    func refusalForPeer() -> ByteBuffer? {
        if !isTLS, !peerIsLoopback, !allowPlaintextRemote {
            metrics.refusedPeers.increment()
            logger.warning("refused a plain TCP agent connection from a non-loopback peer: configure tls.listen (or allow_plaintext_remote)")
            let error = WireError(
                .plaintextRefused,
                "this collector takes plain TCP from loopback only and has no TLS configured: agent data must not cross the network in clear text")
            return try? encoder.encode(.error(error.frame))
        }
        guard session.configuration.keyring.isOpen, !peerIsLoopback else { return nil }
        metrics.refusedPeers.increment()
        logger.warning("refused a non-loopback agent: no agent keys are configured")
        let error = WireError(.authenticationFailed, "this collector has no agent keys and accepts agents from loopback only")
        return try? encoder.encode(.error(error.frame))
    }

    /// Batches handed to the pipeline and not yet acknowledged or failed.
    var batchesInFlight: Int { session.batchesInFlight }

    /// Whether the session needs the agent's certificate names before the next bytes.
    var awaitsCertificate: Bool { session.awaitsCertificate }

    /// The TLS handshake verified the agent's certificate, which carries `names`.
    mutating func peerCertified(names: Set<String>) { session.peerCertified(names: names) }

    /// Handles bytes received at `now`; returns true when the connection must close.
    mutating func received(_ chunk: ByteBuffer, now: ContinuousClock.Instant, send: (ByteBuffer) async throws -> Void) async throws -> Bool {
        session.heard(now: now)
        var chunk = chunk
        buffered.writeBuffer(&chunk)
        while true {
            decoder.maxBodyLength = session.maxInboundFrameBody
            let frame: Frame?
            do {
                frame = try decoder.decode(buffer: &buffered)
            } catch {
                metrics.frameErrors.increment()
                logger.notice("bad frame from agent", metadata: ["code": "\(error.code.name)", "error": "\(error.message)"])
                try await send(try encoder.encode(.error(error.frame)))
                return true
            }
            guard let frame else { break }
            if try await carryOut(session.received(frame), send: send) { return true }
        }
        buffered.discardReadBytes()
        return false
    }

    /// Time passed; returns true when the connection must close.
    mutating func tick(now: ContinuousClock.Instant, send: (ByteBuffer) async throws -> Void) async throws -> Bool {
        try await carryOut(session.tick(now: now), send: send)
    }

    /// The collector is shutting down; returns true when the connection must close.
    mutating func shutdown(send: (ByteBuffer) async throws -> Void) async throws -> Bool {
        try await carryOut(session.shutdown(retryAfterMilliseconds: goawayRetryAfter), send: send)
    }

    private mutating func carryOut(_ action: CollectorSession.Action, send: (ByteBuffer) async throws -> Void) async throws -> Bool {
        switch action {
        case .none:
            return false
        case .send(let frame):
            count(frame)
            try await send(try encoder.encode(frame))
            return false
        case .sendAndClose(let frame):
            count(frame)
            if case .error(let error) = frame {
                logger.notice("closing agent connection", metadata: ["code": "\(error.code)", "error": "\(error.message)"])
            }
            try await send(try encoder.encode(frame))
            return true
        case .close:
            return true
        case .dropBatch:
            metrics.batchesAfterGoaway.increment()
            return false
        case .process(let batch):
            guard let agent = session.agentId else { return true }
            if FaultInjection.ackBeforeCommit { return try await ackBeforeCommitting(batch, agent: agent, send: send) }
            // Not awaited: the loop goes on reading the agent's next batches, which prepare while
            // this one commits; the ack comes back as ``completed(sequence:_:send:)``.
            let session = self.session
            pipeline.submit(batch, agent: agent) { session.admits(tenant: $0) }
            return false
        }
    }

    /// A batch handed to the pipeline is committed (or failed); returns true when the connection
    /// must close. The pipeline commits a connection's batches in the order they arrived, so
    /// the acks go out in that order too.
    mutating func completed(
        sequence: UInt64, _ result: Result<BatchAck, any Error>, send: (ByteBuffer) async throws -> Void
    )
        async throws -> Bool
    {
        switch result {
        case .success(let ack):
            FaultInjection.afterCommit()
            return try await carryOut(session.batchCompleted(ack), send: send)
        case .failure(let error):
            logger.error("batch not committed", metadata: ["sequence": "\(sequence)", "error": "\(error)"])
            let wireError =
                (error as? CollectorIngestError)?.wireError
                ?? WireError(.internalError, "the batch was not committed; send it again")
            return try await carryOut(session.batchFailed(sequence: sequence, error: wireError), send: send)
        }
    }

    /// Waits until every batch handed to the pipeline is committed or failed: a connection does
    /// not end with a commit of its own still running (the ledger may close right after).
    func drain() async { await pipeline.drain() }

    /// The broken variant (`TALLY_FAULT=ack-before-commit`, for the chaos test only): the batch
    /// is acked as if all its events were accepted, and committed a quarter of a second later (a
    /// slow commit), so a kill or a failed commit in between loses acknowledged events. The wait
    /// makes the loss certain rather than lucky: a CI run's six collector kills once all missed
    /// the few milliseconds an immediate commit leaves.
    private mutating func ackBeforeCommitting(_ batch: Batch, agent: String, send: (ByteBuffer) async throws -> Void) async throws -> Bool {
        let declared = batch.payload.getInteger(at: batch.payload.readerIndex + 1, as: UInt32.self) ?? 0
        if try await carryOut(session.batchCompleted(BatchAck(sequence: batch.sequence, accepted: declared)), send: send) { return true }
        try? await Task.sleep(for: .milliseconds(250))
        let session = self.session
        do { _ = try await ingest.process(batch, agent: agent) { session.admits(tenant: $0) } } catch {
            logger.error("batch acked but not committed", metadata: ["sequence": "\(batch.sequence)", "error": "\(error)"])
        }
        return false
    }
}

extension AgentConnection {
    /// The metrics of what the session decided to send.
    private func count(_ frame: Frame) {
        switch frame {
        case .ping: metrics.pingsSent.increment()
        case .goaway: metrics.goawaysSent.increment()
        case .error(let error):
            switch WireErrorCode(rawValue: error.code) {
            case .authenticationFailed, .unknownAgent: metrics.authFailures.increment()
            case .timeout: metrics.idleClosed.increment()
            default: break
            }
        default: break
        }
    }
}

/// An ingest failure that maps to a specific wire error.
struct CollectorIngestError: Error {
    let wireError: WireError
}

#if canImport(Glibc)
import Glibc
#endif

/// Crash points for the crash-safety tests: with `TALLY_FAULT=kill-after-commit` in its
/// environment the collector kills itself (SIGKILL) right after a batch's transaction commits
/// and before its ack is sent — the worst moment for an at-least-once protocol. With
/// `TALLY_FAULT=ack-before-commit` it is deliberately broken: it acks each batch before
/// committing it, so that the chaos test (`Tests/EndToEndTests/ChaosTests.swift`) can prove it
/// catches a collector that loses acknowledged events. Never set in production (inert unless
/// set); read once at start.
enum FaultInjection {
    private static let fault: String? = getenv("TALLY_FAULT").map { String(cString: $0) }
    static let killAfterCommit = fault == "kill-after-commit"
    static let ackBeforeCommit = fault == "ack-before-commit"

    static func afterCommit() {
        if killAfterCommit { kill(getpid(), SIGKILL) }
    }
}
