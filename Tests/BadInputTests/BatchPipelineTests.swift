import Dispatch
import NIOCore
import Synchronization
import TallyTestSupport
import Testing
import TallyCore
import TallyLedger
import TallyWire

@testable import TallyCollector

/// A connection's batches go through its ``BatchPipeline``: the loop does not wait for a
/// commit before it reads the agent's next batch, the commits keep the batches' order, and a
/// connection that ends waits for the commits it started. (Here beside the bad-input tables
/// because it uses the same in-process collector, ``CollectorUnderTest``.)
///
/// The time limits guard against a hang (a missing pipeline waits for the held writer for ever),
/// not against slowness: in a full `make test` these tests took 35–65 s on two busy cores (one
/// alone takes 2 s), and a limit of one minute failed a CI run. They wait by polling with
/// ``eventually(_:every:_:)``, which sleeps between looks: three of them spinning on
/// `Task.yield()` at once kept the cooperative pool's queue full.
@Suite struct BatchPipelineTests {
    /// Holds the ledger's only writer until released, so that no batch can commit meanwhile.
    final class WriterHold: Sendable {
        let entered = DispatchSemaphore(value: 0)
        let gate = DispatchSemaphore(value: 0)
        let task: Task<Void, any Error>

        init(_ ledger: Ledger) async {
            let (entered, gate) = (self.entered, self.gate)
            task = Task {
                try await ledger.perform { _ throws(LedgerError) in
                    entered.signal()
                    gate.wait()
                }
            }
            // On the ledger's own thread, not the cooperative pool: wait for it off the pool.
            await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
                DispatchQueue.global().async {
                    entered.wait()
                    done.resume()
                }
            }
        }

        func release() async throws {
            gate.signal()
            try await task.value
        }
    }

    /// An in-process collector, one connection's pipeline into it and the pipeline's completions,
    /// with the ledger's only writer held (``WriterHold``).
    struct HeldPipeline {
        let collector: CollectorUnderTest
        let ingest: BatchIngest
        let pipeline: BatchPipeline
        let events: AsyncStream<ProtocolServer.ConnectionEvent>
        let sink: AsyncStream<ProtocolServer.ConnectionEvent>.Continuation
        let hold: WriterHold

        init() async throws {
            collector = try CollectorUnderTest()
            ingest = try BatchIngest(limits: .standard, eventLimits: .standard, ledger: collector.ledger, metrics: collector.metrics)
            (events, sink) = AsyncStream.makeStream(of: ProtocolServer.ConnectionEvent.self)
            pipeline = BatchPipeline(ingest: ingest, completions: sink)
            hold = await WriterHold(collector.ledger)
        }

        /// Releases the writer, waits for every commit handed in, and returns the acks in the
        /// order they were handed to the connection (a failed batch is recorded as an issue).
        func acksAfterRelease() async throws -> [BatchAck] {
            try await hold.release()
            await pipeline.drain()
            sink.finish()
            var acks: [BatchAck] = []
            for await event in events {
                guard case .completed(_, .success(let ack)) = event else {
                    Issue.record("a batch failed: \(event)")
                    continue
                }
                acks.append(ack)
            }
            return acks
        }
    }

    @Test(.timeLimit(.minutes(5)))  // without the pipeline the loop waits for the held writer for ever
    func theLoopTakesTheNextBatchesWhileTheWriterIsBusyAndAcksThemInOrder() async throws {
        let collector = try CollectorUnderTest()
        var connection = try await collector.open()
        let hold = await WriterHold(collector.ledger)
        // Three batches in one read: with the writer held, none can commit. The loop returns
        // anyway (before the pipeline it waited for the first commit, and so for ever here).
        var bytes = try CollectorUnderTest.batchFrame(1, recentEvents(4, from: 0))
        var second = try CollectorUnderTest.batchFrame(2, recentEvents(5, from: 100))
        var third = try CollectorUnderTest.batchFrame(3, recentEvents(6, from: 200))
        bytes.writeBuffer(&second)
        bytes.writeBuffer(&third)
        let held = try await collector.deliver(&connection, bytes)
        #expect(!held.closed)
        #expect(held.frames.isEmpty, "an ack was sent while the writer was held")
        #expect(connection.batchesInFlight == 3)

        try await hold.release()
        let acks = try await collector.complete(&connection).frames.compactMap { frame -> BatchAck? in
            guard case .ack(let ack) = frame else { return nil }
            return ack
        }
        let received = try await collector.eventsReceived()
        await collector.stop()
        #expect(acks.map(\.sequence) == [1, 2, 3])
        #expect(acks.map(\.accepted) == [4, 5, 6])
        #expect(received == 15)
    }

    /// A frame repeated while its first copy is committing (the chaos proxy does this): both
    /// copies are acked, the second with the first's outcome, and the events count once.
    @Test(.timeLimit(.minutes(5)))
    func aBatchRepeatedWhileInFlightIsAckedTwiceAndCountedOnce() async throws {
        let collector = try CollectorUnderTest()
        var connection = try await collector.open()
        let hold = await WriterHold(collector.ledger)
        let frame = try CollectorUnderTest.batchFrame(1, recentEvents(4))
        var bytes = frame
        var copy = frame
        bytes.writeBuffer(&copy)
        let held = try await collector.deliver(&connection, bytes)
        #expect(!held.closed && held.frames.isEmpty)
        #expect(connection.batchesInFlight == 2)
        try await hold.release()
        let frames = try await collector.complete(&connection).frames
        let received = try await collector.eventsReceived()
        await collector.stop()
        #expect(frames == [.ack(BatchAck(sequence: 1, accepted: 4)), .ack(BatchAck(sequence: 1, accepted: 4))])
        #expect(received == 4)
    }

    /// One agent draining a backlog keeps the writer fed only if several of its batches are
    /// prepared while one commits: with the writer held, ``BatchPipeline/preparedAhead`` batches
    /// of the connection get prepared (each asks `admits` for its tenant), and the later ones
    /// wait; once the writer is free all commit, in order.
    @Test(.timeLimit(.minutes(5)))
    func batchesArePreparedAheadWhileTheWriterIsBusy() async throws {
        let held = try await HeldPipeline()
        let (collector, pipeline) = (held.collector, held.pipeline)
        let prepared = Mutex<Set<String>>([])
        let total = BatchPipeline.preparedAhead + 2
        for sequence in 1...total {
            let payload = try BatchPayloadEncoder().encode(recentEvents(3, tenant: "tenant-\(sequence)", from: 10 * sequence))
            pipeline.submit(Batch(sequence: UInt64(sequence), payload: payload), agent: "edge-1") { tenant in
                prepared.withLock { _ = $0.insert(tenant) }
                return true
            }
        }
        // The writer is held, so nothing commits: wait for the preparations.
        try #require(await eventually { prepared.withLock { $0.count } >= BatchPipeline.preparedAhead })
        let preparedWhileHeld = prepared.withLock { $0 }
        let acks = try await held.acksAfterRelease()
        for ack in acks { #expect(ack.accepted == 3) }
        let sequences = acks.map(\.sequence)
        await collector.stop()
        #expect(preparedWhileHeld == Set((1...BatchPipeline.preparedAhead).map { "tenant-\($0)" }))
        #expect(BatchPipeline.preparedAhead >= 4, "two left the writer waiting for a drain's next batch")
        #expect(sequences == (1...total).map(UInt64.init))
    }

    /// Large batches are prepared fewer ahead: at most ``BatchPipeline/preparedAheadBytes`` of
    /// compressed batches (the new one included), so that what a connection holds decoded does
    /// not grow with the batch size. Batches of about 40% of that: two prepared while the writer
    /// is held, the third waits for the first to commit; all commit, in order.
    @Test(.timeLimit(.minutes(5)))
    func largeBatchesArePreparedFewerAhead() async throws {
        let held = try await HeldPipeline()
        let (collector, pipeline) = (held.collector, held.pipeline)
        let prepared = Mutex<Set<String>>([])
        var payloads: [ByteBuffer] = []
        var generator = SystemRandomNumberGenerator()
        for sequence in 1...4 {
            // Ids of random hex do not compress: grow the batch to 40% of the budget, to the
            // count the last encoding's bytes per event says reaches it (two or three encodings;
            // one per 500 events took most of a minute of a loaded CI core).
            let target = BatchPipeline.preparedAheadBytes * 2 / 5
            var batch: [UsageEvent] = []
            var payload = ByteBuffer()
            var wanted = 500
            while payload.readableBytes < target {
                let time = EventTime.now().advanced(by: .seconds(-60))
                while batch.count < wanted {
                    let id = (0..<4).map { _ in String(generator.next() as UInt64, radix: 16) }.joined()
                    batch.append(UsageEvent(tenant: "tenant-\(sequence)", metric: "api_calls", quantity: Quantity(1), timestamp: time, id: id))
                }
                payload = try BatchPayloadEncoder().encode(batch)
                wanted = batch.count * target / max(payload.readableBytes, 1) + 64
            }
            #expect(payload.readableBytes < BatchPipeline.preparedAheadBytes / 2)
            payloads.append(payload)
        }
        for (index, payload) in payloads.enumerated() {
            pipeline.submit(Batch(sequence: UInt64(index + 1), payload: payload), agent: "edge-1") { tenant in
                prepared.withLock { _ = $0.insert(tenant) }
                return true
            }
        }
        try #require(await eventually { prepared.withLock { $0.count } >= 2 })
        // The third must not start while the first is uncommitted: give it a second to (it takes
        // milliseconds when it may).
        _ = await eventually(.seconds(1)) { prepared.withLock { $0.count } != 2 }
        let preparedWhileHeld = prepared.withLock { $0 }
        let sequences = try await held.acksAfterRelease().map(\.sequence)
        await collector.stop()
        #expect(preparedWhileHeld == ["tenant-1", "tenant-2"])
        #expect(sequences == [1, 2, 3, 4])
    }

    /// With one writer, a connection's batches prepared while the writer commits are queued at
    /// once, and the writer commits them together next, up to ``Ledger/commitGroupLimit`` in one
    /// transaction with one fsync. Each still gets its own ack, in order, and a batch repeating
    /// the events of one before it in the same transaction finds them stored.
    @Test(.timeLimit(.minutes(5)))  // with commits started one after another's end, none queues while the writer is held
    func batchesQueuedWhileTheWriterIsBusyCommitInOneTransaction() async throws {
        let held = try await HeldPipeline()
        let (collector, pipeline) = (held.collector, held.pipeline)
        #expect(held.ingest.commitsInQueueOrder)
        let before = collector.ledger.queuedCommitGroups
        let total = BatchPipeline.preparedAhead
        let first = recentEvents(3, tenant: "tenant-1", from: 10)
        for sequence in 1...total {
            // Batch 2 repeats batch 1's events: duplicates of a batch in the same transaction.
            let events = sequence <= 2 ? first : recentEvents(3, tenant: "tenant-\(sequence)", from: 10 * sequence)
            pipeline.submit(Batch(sequence: UInt64(sequence), payload: try BatchPayloadEncoder().encode(events)), agent: "edge-1") { _ in true }
        }
        try #require(await eventually { collector.ledger.commitsWaiting >= total })
        let acks = try await held.acksAfterRelease()
        let after = collector.ledger.queuedCommitGroups
        let groupsCounted = collector.counter("tally_collector_commit_groups_total")
        let batchesCounted = collector.counter("tally_collector_batches_total")
        let received = try await collector.eventsReceived()
        await collector.stop()
        #expect(acks.map(\.sequence) == (1...total).map(UInt64.init))
        #expect(acks.map(\.accepted) == [3, 0] + Array(repeating: 3, count: total - 2))
        #expect(acks.dropFirst().first?.duplicate == 3)
        let groups = (total + Ledger.commitGroupLimit - 1) / Ledger.commitGroupLimit
        #expect(total > Ledger.commitGroupLimit && Ledger.commitGroupLimit > 1)
        #expect(after.groups - before.groups == groups && after.batches - before.batches == total, "\(before) -> \(after)")
        // What an operator sees: batches per transaction.
        #expect(groupsCounted == groups && batchesCounted == total)
        #expect(received == 3 * total)
    }

    @Test func aDrainWaitsForTheCommitsItsConnectionStarted() async throws {
        let held = try await HeldPipeline()
        let (collector, pipeline, events) = (held.collector, held.pipeline, held.events)
        let payload = try BatchPayloadEncoder().encode(recentEvents(7))
        pipeline.submit(Batch(sequence: 1, payload: payload), agent: "edge-1") { _ in true }
        // What a connection's end does (the listener drains before it returns): the count read
        // right after the drain must include the batch, which cannot commit before the release.
        let ledger = collector.ledger
        let afterDrain = Task {
            await pipeline.drain()
            return try await ledger.read { store throws(LedgerError) in
                try store.reconciliation(ReconciliationFilter()).reduce(0) { $0 + Int($1.counts.received) }
            }
        }
        try await held.hold.release()
        let received = try await afterDrain.value
        var completions = events.makeAsyncIterator()
        let completion = await completions.next()
        await collector.stop()
        #expect(received == 7, "the drain returned before the batch it waited for was committed")
        guard case .completed(1, .success(let ack))? = completion else {
            Issue.record("no ack for batch 1: \(String(describing: completion))")
            return
        }
        #expect(ack.accepted == 7)
    }
}
