import NIOCore
import Prometheus
import TallyCore
import TallyLedger
import TallyWire

@testable import TallyCollector

/// A collector's connection handling in-process: a SQLite ledger in a temporary directory, the
/// collector's metrics in their own registry, and ``AgentConnection`` — the loop body of every
/// agent connection — fed bytes directly, as the listener would, with what it sends collected.
final class CollectorUnderTest {
    let directory: String
    let ledger: Ledger
    let registry = PrometheusCollectorRegistry()
    let metrics: CollectorMetrics
    let limits: SessionLimits
    /// Where the connections' pipelines report committed batches (the listener's loop in a
    /// collector; ``feed(_:_:)`` here).
    let completions: AsyncStream<ProtocolServer.ConnectionEvent>
    private let completionSink: AsyncStream<ProtocolServer.ConnectionEvent>.Continuation

    init(limits: SessionLimits = .standard) throws {
        (completions, completionSink) = AsyncStream.makeStream(of: ProtocolServer.ConnectionEvent.self)
        directory = makeTemporaryDirectory("collector")
        ledger = Ledger(store: try SQLiteLedgerStore(path: directory + "/ledger.db"))
        metrics = CollectorMetrics(factory: PrometheusMetricsFactory(registry: registry))
        self.limits = limits
    }

    func stop() async {
        await ledger.shutdown()
        removeDirectory(directory)
    }

    /// A new connection from a loopback agent to this open-mode collector (no agent keys).
    func connect() throws -> AgentConnection {
        let settings = ProtocolServer.Settings(keyring: AgentKeyring(), limits: limits, eventLimits: .standard)
        return try AgentConnection(
            settings: settings, ledger: ledger, metrics: metrics, logger: quietLogger, peerIsLoopback: true, completions: completionSink)
    }

    /// A connection through its handshake (hello, challenge, auth, welcome).
    func open(agent: String = "edge-1") async throws -> AgentConnection {
        var connection = try connect()
        let hello = Frame.hello(Hello(minVersion: 1, maxVersion: 1, agentId: agent, agentNonce: .random(), software: "bad-input-tests"))
        let challenge = try await feed(&connection, try FrameEncoder().encode(hello))
        guard case .challenge? = challenge.frames.first, !challenge.closed else { throw HarnessError("no challenge: \(challenge)") }
        let welcome = try await feed(&connection, try FrameEncoder().encode(.auth(Auth(proof: .none))))
        guard case .welcome? = welcome.frames.first, !welcome.closed else { throw HarnessError("no welcome: \(welcome)") }
        return connection
    }

    /// What the collector answered to some bytes, and whether it then closed the connection.
    struct Answer: CustomStringConvertible {
        var frames: [Frame]
        var closed: Bool
        var description: String { "\(frames), closed: \(closed)" }

        /// The error frame sent, as a wire error.
        var error: WireError? {
            guard case .error(let frame)? = frames.last, let code = WireErrorCode(rawValue: frame.code) else { return nil }
            return WireError(code, frame.message)
        }
    }

    /// Feeds `bytes` as the listener's loop would, and then every completion of the batches
    /// they handed to the connection's pipeline, so the answer holds their acks as well.
    func feed(_ connection: inout AgentConnection, _ bytes: ByteBuffer) async throws -> Answer {
        let answer = try await deliver(&connection, bytes)
        guard !answer.closed else {
            await connection.drain()
            return answer
        }
        let completed = try await complete(&connection)
        return Answer(frames: answer.frames + completed.frames, closed: completed.closed)
    }

    /// Feeds `bytes` only: what the loop answers before any batch they carried is committed.
    func deliver(_ connection: inout AgentConnection, _ bytes: ByteBuffer) async throws -> Answer {
        var sent: [ByteBuffer] = []
        let closed = try await connection.received(bytes, now: .now) { sent.append($0) }
        return Answer(frames: try Self.frames(in: sent), closed: closed)
    }

    /// Hands the connection the completion of each batch in flight, as the listener's loop
    /// does, until none is left or the connection closes; then waits for its pipeline.
    func complete(_ connection: inout AgentConnection) async throws -> Answer {
        var sent: [ByteBuffer] = []
        var closed = false
        var pending = completions.makeAsyncIterator()
        while !closed, connection.batchesInFlight > 0 {
            guard case .completed(let sequence, let result)? = await pending.next() else { throw HarnessError("no completion") }
            closed = try await connection.completed(sequence: sequence, result) { sent.append($0) }
        }
        await connection.drain()
        return Answer(frames: try Self.frames(in: sent), closed: closed)
    }

    private static func frames(in sent: [ByteBuffer]) throws -> [Frame] {
        var frames: [Frame] = []
        var decoder = FrameDecoder()
        for var buffer in sent {
            while let frame = try decoder.decode(buffer: &buffer) { frames.append(frame) }
        }
        return frames
    }

    func feed(_ connection: inout AgentConnection, _ bytes: [UInt8]) async throws -> Answer {
        try await feed(&connection, ByteBuffer(bytes: bytes))
    }

    /// A batch frame of `events` (raw columns) with `sequence`.
    static func batchFrame(_ sequence: UInt64, _ events: [UsageEvent]) throws -> ByteBuffer {
        try FrameEncoder().encode(.batch(Batch(sequence: sequence, payload: try BatchPayloadEncoder(compression: .none).encode(events))))
    }

    /// One of the collector's counters.
    func counter(_ series: String) -> Int {
        var bytes: [UInt8] = []
        registry.emit(into: &bytes)
        return Int(sample(String(decoding: bytes, as: UTF8.self), series) ?? 0)
    }

    /// Events received over all batches, as reconciliation counts them (every status).
    func eventsReceived() async throws -> Int {
        try await ledger.read { store throws(LedgerError) in
            try store.reconciliation(ReconciliationFilter()).reduce(0) { $0 + Int($1.counts.received) }
        }
    }

    /// The raw ledger events (accepted, adjusted, late) of every tenant in `period`.
    func storedEvents(in period: BillingPeriod) async throws -> [UsageEvent] {
        try await ledger.read { store throws(LedgerError) in
            var events: [UsageEvent] = []
            try store.scanRawEvents(tenant: nil, period: period) { events.append($0.event) }
            return events
        }
    }

    func refusedEvents(agent: String, sequence: UInt64) async throws -> [RefusedEvent] {
        try await ledger.read { store throws(LedgerError) in try store.refusedEvents(agent: agent, sequence: sequence) }
    }
}

struct HarnessError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Events a collector running on the wall clock accepts: a minute old.
func recentEvents(_ count: Int, tenant: String = "acme", from first: Int = 0) -> [UsageEvent] {
    let time = EventTime.now().advanced(by: .seconds(-60))
    return (first..<(first + count)).map {
        UsageEvent(tenant: tenant, metric: "api_calls", quantity: Quantity(1), timestamp: time, id: "recent-\($0)")
    }
}
