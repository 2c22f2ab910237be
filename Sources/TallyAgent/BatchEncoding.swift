import NIOPosix
import TallyCore
import TallyWire

/// Encoding a batch (its columns, then zstd) is most of the agent's CPU while it drains a
/// backlog. It runs here, on a thread of its own at background priority
/// (``BackgroundPriority``), not on the cooperative pool that also answers the agent's HTTP
/// ingest: on a busy host the API server beside the agent, and the agent's own ingest, get the
/// core first, and the backlog drains with what is left. Nothing waits when nothing competes.
struct BatchEncoding: Sendable {
    private let thread: NIOThreadPool
    private let encoder: Confined

    /// The encoder, used by one batch at a time: the ship loop awaits each encoding before the
    /// next (it owns the only `BatchEncoding`), and the pool's thread takes the encoder after the
    /// loop hands it over, so its zstd context is never used from two threads at once.
    private struct Confined: @unchecked Sendable {
        let encoder: BatchPayloadEncoder
    }

    init(encoder: BatchPayloadEncoder) {
        thread = NIOThreadPool(numberOfThreads: 1)
        thread.start()
        self.encoder = Confined(encoder: encoder)
    }

    /// `events` as batch `sequence`, encoded on the background thread.
    func encode(sequence: UInt64, events: EventSpans) async throws -> AgentSession.OutgoingBatch {
        let confined = encoder
        let result = try await thread.runIfActive { () -> Result<AgentSession.OutgoingBatch, WireError> in
            BackgroundPriority.lowerCurrentThread()
            ThreadName.set("tally-encode")
            do throws(WireError) {
                return .success(try AgentSession.OutgoingBatch(sequence: sequence, events: events, encoder: confined.encoder))
            } catch {
                return .failure(error)
            }
        }
        switch result {
        case .success(let batch): return batch
        case .failure(let error): throw ShipperError.encoding(error)
        }
    }

    /// The nice value of the encoding thread, as the encodings so far left it (tests).
    func threadNiceness() async throws -> Int32 {
        try await thread.runIfActive { BackgroundPriority.currentThreadNiceness() }
    }

    /// The encoding thread's name, as the encodings so far left it (tests).
    func threadName() async throws -> String {
        try await thread.runIfActive { ThreadName.current() }
    }

    /// Stops the thread once the batch in progress (if any) is encoded.
    func shutdown() async {
        try? await thread.shutdownGracefully()
    }
}
