import NIOCore
import TallyConfig
import TallyCore
import TallySpool
import TallyWire
import Testing
@testable import TallyAgent

/// A world for ``ShipperMachine`` without sockets, disk or clock: a spool of numbered events
/// (event `i` sits at offset `i`), a sequence counter, collectors that are up or down, and a
/// record of everything the machine asked for. It carries out actions as ``ShipLoop`` does, in
/// order, feeding each request's answer back.
struct ShipperWorld {
    typealias Action = ShipperMachine.Action

    /// A batch the machine cut: its first event and its event count.
    struct Cut: Hashable {
        var start: UInt64
        var count: Int
    }

    var machine: ShipperMachine
    var now = ContinuousClock.now
    /// Events appended to the spool.
    var appended: UInt64 = 0
    /// The spool is freed up to (not including) this event.
    var freedTo: UInt64 = 0
    var nextSequence: UInt64 = 1
    var lastRead: (start: UInt64, count: Int)?
    /// Every batch cut, by sequence.
    var cuts: [UInt64: Cut] = [:]
    /// Sequences the collector acked (on any connection).
    var acked: Set<UInt64> = []
    /// The collector of the open connection, and whether its handshake is done.
    var connectedTo: Int?
    var welcomed = false
    /// Batches written on the open connection and not yet answered by the collector, in order.
    var inFlight: [UInt64] = []
    /// Every `.connect` asked for, in order.
    var connects: [Int] = []
    /// Every batch frame written: its sequence and its payload's first event.
    var batchesWritten: [(sequence: UInt64, start: UInt64)] = []
    var reports: [ShipperMachine.Report] = []
    var stopped = false
    var down: Set<Int> = []
    var failFrees = false
    var failLeases = false
    var readRequests: [Int] = []
    /// The most events a spool read returns whatever `maxEvents` asked for, as `batch.max_bytes`
    /// does with large records (the read then says so: ``SpoolBatch/reachedLimit``); nil for no cap.
    var byteCapEvents: Int?
    /// The batches the machine asked to record as acknowledged, in order.
    var recordedBatches: [AcknowledgedBatch] = []

    init(
        collectors: Int = 1, window: Int = 4, maxEvents: Int = 10, linger: Duration = .milliseconds(50),
        eventsPerSecond: Int? = nil, stopWhenDrained: Bool = false, seed: UInt64 = 1
    ) {
        var reconnect = AgentConfig.Reconnect()
        reconnect.initial = .milliseconds(100)
        reconnect.maximum = .seconds(2)
        reconnect.afterFatalError = .seconds(300)
        machine = ShipperMachine(
            settings: ShipperMachine.Settings(
                window: window, maxEvents: maxEvents, linger: linger, eventsPerSecond: eventsPerSecond,
                stopWhenDrained: stopWhenDrained, shutdownGrace: .seconds(2), handshakeTimeout: .seconds(10),
                reconnect: reconnect),
            session: AgentSession.Configuration(agentId: "edge-1", secret: nil, window: window),
            rotation: CollectorRotation(count: collectors, index: 0), now: now, jitterSeed: seed)
    }

    static func position(_ event: UInt64) -> SpoolPosition { SpoolPosition(segment: 1, offset: event) }

    mutating func run(_ actions: [Action]) {
        var queue = actions
        while !queue.isEmpty {
            switch queue.removeFirst() {
            case .connect(let index):
                connects.append(index)
                if down.contains(index) {
                    queue += machine.connectFailed(.failed("collector \(index) is down"), now: now)
                } else {
                    connectedTo = index
                    welcomed = false
                    inFlight = []
                    queue += machine.connected(agentNonce: Nonce.random(), now: now)
                }
            case .send(let frames):
                #expect(connectedTo != nil, "frames written with no connection")
                for case .batch(let batch) in frames {
                    var payload = batch.payload
                    let start = payload.readInteger(as: UInt64.self) ?? .max
                    batchesWritten.append((batch.sequence, start))
                    inFlight.append(batch.sequence)
                }
            case .close:
                connectedTo = nil
                welcomed = false
                inFlight = []
            case .readSpool(let from, let maxEvents):
                readRequests.append(maxEvents)
                let start = from.segment == 0 ? 0 : from.offset
                let available = Int(appended - start)
                let limit = min(maxEvents, byteCapEvents ?? .max)
                let count = min(limit, available)
                lastRead = (start, count)
                queue += machine.spoolRead(
                    events: count, end: Self.position(start + UInt64(count)), full: available > limit, now: now)
            case .cutBatch:
                guard !failLeases, let read = lastRead else {
                    queue += machine.localFailure("the sequence store is full", now: now)
                    continue
                }
                let sequence = nextSequence
                nextSequence += 1
                cuts[sequence] = Cut(start: read.start, count: read.count)
                let batch = AgentSession.OutgoingBatch(
                    sequence: sequence, eventCount: UInt32(read.count), payload: ByteBuffer(integer: read.start))
                queue += machine.batchCut(batch, now: now)
            case .freeSpool(let position):
                if failFrees {
                    queue += machine.spoolFreeFailed(upTo: position, now: now)
                } else {
                    #expect(position.offset >= freedTo, "the spool is freed backwards")
                    freedTo = max(freedTo, position.offset)
                    queue += machine.spoolFreed(upTo: position)
                }
            case .recordAcknowledged(let batches):
                // Each one is an acked batch, recorded once, with exactly the data it was cut from.
                for batch in batches {
                    #expect(acked.contains(batch.sequence) && !recordedBatches.contains { $0.sequence == batch.sequence })
                    if let cut = cuts[batch.sequence] {
                        #expect(batch.end.offset == cut.start + UInt64(cut.count), "batch \(batch.sequence)")
                        #expect(batch.start.offset == 0 || batch.start.offset == cut.start, "batch \(batch.sequence)")
                    }
                }
                recordedBatches += batches
            case .report(let report):
                reports.append(report)
            case .stop:
                stopped = true
            case .abort(let reason):
                Issue.record("the machine aborted: \(reason)")
                stopped = true
            }
        }
    }

    // MARK: The collector's side

    /// The collector answers the hello: challenge, then welcome (an open collector).
    mutating func welcome(window: UInt16 = 8, maxEvents: UInt32 = 10_000) {
        guard connectedTo != nil, !welcomed else { return }
        run(machine.received(.challenge(Challenge(version: 1, collectorNonce: Nonce.random())), now: now))
        let limits = SessionLimits(maxFrameBody: 16 << 20, maxDecompressedBytes: 64 << 20, maxEventsPerBatch: maxEvents, window: window)
        welcomed = true
        run(machine.received(.welcome(Welcome(authenticated: false, version: 1, proof: .none, limits: limits)), now: now))
    }

    mutating func ack(_ sequence: UInt64) {
        inFlight.removeAll { $0 == sequence }
        acked.insert(sequence)
        let count = UInt32(cuts[sequence]?.count ?? 0)
        run(machine.received(.ack(BatchAck(sequence: sequence, accepted: count)), now: now))
    }

    /// The ack is lost on the way back: the collector committed, the agent never hears.
    mutating func loseAck(_ sequence: UInt64) {
        inFlight.removeAll { $0 == sequence }
        acked.insert(sequence)
    }

    mutating func goaway(retryAfterMilliseconds: UInt32 = 250) {
        run(
            machine.received(
                .goaway(GoAway(code: WireErrorCode.shuttingDown.rawValue, retryAfterMilliseconds: retryAfterMilliseconds, message: "restarting")),
                now: now))
    }

    mutating func cut() {
        connectedTo = nil
        welcomed = false
        inFlight = []
        run(machine.disconnected("connection reset by peer", now: now))
    }

    // MARK: The agent's side

    mutating func append(_ events: UInt64) {
        appended += events
        run(machine.spoolAppended(now: now))
    }

    mutating func advance(_ duration: Duration) {
        now = now + duration
        run(machine.tick(now: now))
    }

    mutating func shutdown() { run(machine.shutdown(now: now)) }

    /// Sequences the world sent under each first event: more than one means a batch went out
    /// under two sequences.
    var sequencesByStart: [UInt64: Set<UInt64>] {
        var map: [UInt64: Set<UInt64>] = [:]
        for cut in cuts { map[cut.value.start, default: []].insert(cut.key) }
        return map
    }

    /// Where the spool may be freed to at most: the first event of the earliest batch cut and
    /// not acked by the collector (the end of the read position otherwise).
    var freeLimit: UInt64 {
        cuts.filter { !acked.contains($0.key) }.map(\.value.start).min() ?? appended
    }

    var connectionEnds: [ShipperMachine.Ending] {
        reports.compactMap { if case .connectionEnded(let ending, _, _, _, _) = $0 { ending } else { nil } }
    }
}

@Suite struct ShipperMachineTests {
    /// Window 4, batches of 10, an open session with the collector.
    func openWorld(collectors: Int = 1, events: UInt64 = 40) -> ShipperWorld {
        var world = ShipperWorld(collectors: collectors)
        world.run(world.machine.start(now: world.now))
        world.welcome()
        world.append(events)
        return world
    }

    @Test func outOfOrderAcksFreeOnlyTheContiguousPrefix() {
        var world = openWorld()
        #expect(world.batchesWritten.map(\.sequence) == [1, 2, 3, 4])
        #expect(world.batchesWritten.map(\.start) == [0, 10, 20, 30])
        world.ack(3)
        world.ack(2)
        #expect(world.freedTo == 0, "freed past unacked batch 1")
        world.ack(1)
        #expect(world.freedTo == 30)
        world.ack(4)
        #expect(world.freedTo == 40)
        #expect(world.machine.unacknowledged == 0)
        // Recorded as freed, in spool order, each with its own range: what `spool inspect --id`
        // names an acknowledged event's batch by.
        #expect(world.recordedBatches.map(\.sequence) == [1, 2, 3, 4])
        #expect(world.recordedBatches.map(\.end.offset) == [10, 20, 30, 40])
        #expect(AcknowledgedBatch.covering(ShipperWorld.position(25), in: world.recordedBatches)?.sequence == 3)
    }

    @Test func theWindowBoundsBatchesCutAndNotFreed() {
        var world = openWorld(events: 100)
        #expect(world.cuts.count == 4)
        // An ack for a later batch frees nothing, so no new batch is cut either.
        world.ack(4)
        #expect(world.cuts.count == 4)
        world.ack(1)
        #expect(world.cuts.count == 5 && world.batchesWritten.last?.sequence == 5)
    }

    @Test func aLostAckIsAnsweredByResendingUnderTheSameSequence() {
        var world = openWorld(events: 20)
        world.loseAck(1)
        world.ack(2)
        #expect(world.freedTo == 0)
        world.cut()
        #expect(world.connectionEnds == [.failed("connection reset by peer")])
        world.advance(.seconds(1))
        world.welcome()
        // Batch 1 goes out again, under sequence 1, with the same events; nothing new is cut.
        #expect(world.batchesWritten.map(\.sequence) == [1, 2, 1])
        #expect(world.batchesWritten.last?.start == 0)
        #expect(world.cuts.count == 2)
        world.ack(1)
        #expect(world.freedTo == 20)
    }

    @Test func anAckLostOnALiveConnectionEndsItAfterTheAckTimeout() {
        var world = openWorld(events: 20)
        world.loseAck(1)
        world.ack(2)
        world.advance(.seconds(29))
        #expect(world.connectedTo == 0)
        world.advance(.seconds(1))
        #expect(world.connectionEnds == [.failed("batch 1 was not acknowledged within 30.0 seconds")])
        world.advance(.seconds(1))
        world.welcome()
        #expect(world.batchesWritten.map(\.sequence) == [1, 2, 1])
        world.ack(1)
        #expect(world.freedTo == 20)
    }

    @Test func aDisconnectResendsEveryBatchInFlightInOrderBeforeNewOnes() {
        var world = openWorld(events: 40)
        world.ack(1)
        world.cut()
        world.append(10)  // data arrives while disconnected: nothing is read or sent
        #expect(world.batchesWritten.count == 4)
        world.advance(.seconds(1))
        #expect(world.connects == [0, 0])
        world.welcome()
        #expect(world.batchesWritten.map(\.sequence) == [1, 2, 3, 4, 2, 3, 4, 5])
        #expect(world.batchesWritten.last?.start == 40)
    }

    @Test func goawayMidWindowTakesTheAcksSendsNothingNewAndMovesOn() {
        var world = openWorld(collectors: 2, events: 100)
        world.goaway(retryAfterMilliseconds: 250)
        world.ack(1)
        world.ack(2)
        // Draining: the acks free the spool, but no batch is cut or sent while the goaway stands.
        #expect(world.freedTo == 20)
        #expect(world.batchesWritten.count == 4)
        #expect(world.connectedTo == 0)
        world.ack(3)
        world.ack(4)
        #expect(world.connectedTo == nil, "a drained goaway closes")
        #expect(world.connectionEnds == [.goaway(retryAfter: .milliseconds(250))])
        world.advance(.milliseconds(200))
        #expect(world.connects == [0], "reconnected before the goaway's delay")
        world.advance(.milliseconds(60))
        #expect(world.connects == [0, 1])
        world.welcome()
        #expect(world.batchesWritten.map(\.sequence).suffix(4) == [5, 6, 7, 8])
    }

    @Test func goawayWithBatchesUnackedResendsThemToTheNextCollector() {
        var world = openWorld(collectors: 3, events: 20)
        world.goaway()
        world.cut()  // the collector closes without answering batch 1 and 2
        world.advance(.seconds(1))
        #expect(world.connects == [0, 1])
        world.welcome()
        #expect(world.batchesWritten.map(\.sequence) == [1, 2, 1, 2])
    }

    @Test func aCollectorThatIsDownIsPassedOverWithBackoff() {
        var world = ShipperWorld(collectors: 3)
        world.down = [0, 1]
        world.run(world.machine.start(now: world.now))
        #expect(world.connects == [0])
        guard case .connectionEnded(_, 0, let firstDelay, let next, _)? = world.reports.last else {
            Issue.record("no connectionEnded report")
            return
        }
        #expect(next == 1 && firstDelay <= .milliseconds(100))
        world.advance(.milliseconds(100))
        #expect(world.connects == [0, 1])
        world.advance(.milliseconds(200))
        #expect(world.connects == [0, 1, 2] && world.connectedTo == 2)
        // Backoff grew (full jitter under a doubling ceiling) while nothing worked.
        let delays = world.reports.compactMap { if case .connectionEnded(_, _, let delay, _, _) = $0 { delay } else { nil } }
        #expect(delays.count == 2 && delays[1] <= .milliseconds(200))
    }

    @Test func aRefusedAgentBacksOffLong() {
        var world = ShipperWorld(collectors: 2)
        world.run(world.machine.start(now: world.now))
        world.run(world.machine.received(.challenge(Challenge(version: 1, collectorNonce: Nonce.random())), now: world.now))
        world.run(world.machine.received(.error(ErrorFrame(code: WireErrorCode.authenticationFailed.rawValue, message: "bad key")), now: world.now))
        guard case .connectionEnded(.fatal, 0, let delay, 1, _)? = world.reports.last else {
            Issue.record("not ended as fatal: \(world.reports)")
            return
        }
        #expect(delay == .seconds(300))
        world.advance(.seconds(299))
        #expect(world.connects == [0])
    }

    @Test func theHandshakeTimesOut() {
        var world = ShipperWorld()
        world.run(world.machine.start(now: world.now))
        world.advance(.seconds(10))
        #expect(world.connectedTo == 0)
        world.advance(.milliseconds(1))
        #expect(world.connectedTo == nil)
        #expect(world.connectionEnds == [.failed("the handshake timed out")])
    }

    @Test func aPartialBatchLingersThenGoes() {
        var world = ShipperWorld(linger: .milliseconds(50))
        world.run(world.machine.start(now: world.now))
        world.welcome()
        world.append(3)
        #expect(world.cuts.isEmpty)
        world.advance(.milliseconds(20))
        world.append(2)
        #expect(world.cuts.isEmpty)
        world.advance(.milliseconds(31))
        #expect(world.cuts[1] == ShipperWorld.Cut(start: 0, count: 5))
        // A full batch does not wait.
        world.append(10)
        #expect(world.cuts[2] == ShipperWorld.Cut(start: 5, count: 10))
    }

    /// Large records: `batch.max_bytes` stops each read at 4 events of the 10 `max_events`
    /// allows. Those batches are full and go at once, with no tick in between; only the last
    /// one, which reached the spool's end, lingers.
    @Test func aBatchCutShortByItsByteCapGoesAtOnce() {
        var world = ShipperWorld(window: 8, linger: .milliseconds(50))
        world.byteCapEvents = 4
        world.run(world.machine.start(now: world.now))
        world.welcome()
        world.append(14)
        #expect(world.cuts[1] == ShipperWorld.Cut(start: 0, count: 4))
        #expect(world.cuts[2] == ShipperWorld.Cut(start: 4, count: 4))
        #expect(world.cuts[3] == ShipperWorld.Cut(start: 8, count: 4))
        #expect(world.cuts.count == 3, "the last 2 events reached the spool's end: they linger")
        world.advance(.milliseconds(51))
        #expect(world.cuts[4] == ShipperWorld.Cut(start: 12, count: 2))
    }

    @Test func theRateBudgetLimitsEventsCut() {
        var world = ShipperWorld(window: 8, maxEvents: 100, linger: .zero, eventsPerSecond: 200)
        world.run(world.machine.start(now: world.now))
        world.welcome()
        world.append(1_000)
        // The first burst is a twentieth of a second's budget (10 events).
        #expect(world.cuts.values.map(\.count).reduce(0, +) == 10)
        for _ in 0..<20 {
            world.advance(.milliseconds(50))
            while let sequence = world.inFlight.first { world.ack(sequence) }
        }
        let cutAfterOneSecond = world.cuts.values.map(\.count).reduce(0, +)
        #expect(cutAfterOneSecond == 210, "a second at 200/s after a burst of 10")
        #expect(world.readRequests.allSatisfy { $0 <= 100 })
    }

    @Test func aSequenceLeaseFailurePausesAndCutsNothing() {
        var world = ShipperWorld()
        world.failLeases = true
        world.run(world.machine.start(now: world.now))
        world.welcome()
        world.append(10)
        #expect(world.cuts.isEmpty)
        #expect(world.reports.contains(.paused("the sequence store is full")))
        world.failLeases = false
        world.advance(.milliseconds(500))
        #expect(world.cuts.isEmpty, "retried before the pause ended")
        world.advance(.milliseconds(500))
        #expect(world.cuts[1] == ShipperWorld.Cut(start: 0, count: 10))
    }

    @Test func aCheckpointThatCannotBeStoredIsRetriedAndShippingGoesOn() {
        var world = openWorld(events: 20)
        world.failFrees = true
        world.ack(1)
        world.ack(2)
        #expect(world.freedTo == 0)
        #expect(world.machine.unsavedAck == ShipperWorld.position(20))
        #expect(world.reports.contains(.checkpointFailing(first: true)) && world.reports.contains(.checkpointFailing(first: false)))
        world.append(10)
        #expect(world.batchesWritten.count == 3, "shipping stopped on a failing checkpoint")
        world.failFrees = false
        world.advance(.seconds(1))
        #expect(world.freedTo == 20)
        #expect(world.reports.contains(.checkpointStoredAgain(ShipperWorld.position(20))))
    }

    @Test func shutdownWaitsForInFlightAcksThenStops() {
        var world = openWorld(events: 20)
        world.shutdown()
        #expect(!world.stopped)
        world.append(10)
        #expect(world.batchesWritten.count == 2, "a batch was cut during shutdown")
        world.ack(1)
        #expect(!world.stopped)
        world.ack(2)
        #expect(world.stopped && world.connectedTo == nil)
        #expect(world.freedTo == 20)
    }

    @Test func shutdownGivesUpOnAcksAfterTheGrace() {
        var world = openWorld(events: 20)
        world.shutdown()
        world.advance(.seconds(1))
        #expect(!world.stopped)
        world.advance(.seconds(1))
        #expect(world.stopped && world.freedTo == 0)
    }

    @Test func aShutdownStoresAPendingCheckpointOnTheWayOut() {
        var world = openWorld(events: 10)
        world.failFrees = true
        world.ack(1)
        world.failFrees = false
        world.shutdown()
        #expect(world.stopped && world.freedTo == 10)
    }

    @Test func drainModeStopsOnceTheSpoolIsEmptyAndAcked() {
        var world = ShipperWorld(stopWhenDrained: true)
        world.appended = 15
        world.run(world.machine.start(now: world.now))
        world.welcome()
        #expect(world.cuts.values.map(\.count).sorted() == [5, 10], "drain mode does not linger")
        world.ack(1)
        #expect(!world.stopped)
        world.ack(2)
        #expect(world.stopped && world.freedTo == 15)
    }

    /// Seeded: any interleaving of new events, acks (in any order, lost or repeated), cut
    /// connections, goaways, collectors going down, failing checkpoints and ticks. After every
    /// step the spool is never freed past a batch the collector has not acked, and no spool range
    /// goes out under two sequences; every batch frame carries its cut's events. Once the faults
    /// stop, everything is delivered and freed.
    @Test(arguments: 0..<40)
    func neverFreesPastAnUnackedBatchNorSendsABatchUnderTwoSequences(seed: Int) {
        var random = TestRandom(seed: UInt64(seed) &* 7_919)
        var world = ShipperWorld(collectors: 1 + Int(random.next(below: 3)), window: 1 + Int(random.next(below: 5)), seed: UInt64(seed))
        world.run(world.machine.start(now: world.now))
        for _ in 0..<300 {
            switch random.next(below: 12) {
            case 0, 1: world.append(random.next(below: 25))
            case 2: world.advance(.milliseconds(Int64(random.next(below: 400))))
            case 3: world.welcome()
            case 4, 5, 6:
                if let sequence = world.inFlight.randomElement(using: &random) { world.ack(sequence) }
            case 7:
                if let sequence = world.inFlight.randomElement(using: &random) { world.loseAck(sequence) }
            case 8:
                if world.connectedTo != nil && random.next(below: 3) == 0 { world.cut() }
            case 9:
                if world.welcomed && random.next(below: 4) == 0 { world.goaway(retryAfterMilliseconds: UInt32(random.next(below: 300))) }
            case 10:
                world.down = random.next(below: 3) == 0 ? [0] : []
            default:
                world.failFrees = random.next(below: 4) == 0
            }
            check(world)
        }
        // The faults stop: everything is delivered and freed.
        world.down = []
        world.failFrees = false
        for _ in 0..<200 where world.freedTo < world.appended || world.machine.unacknowledged > 0 {
            world.advance(.seconds(3))
            world.welcome()
            while let sequence = world.inFlight.first { world.ack(sequence) }
            check(world)
        }
        #expect(world.freedTo == world.appended, "seed \(seed): \(world.appended - world.freedTo) events never freed")
        #expect(world.machine.unacknowledged == 0)
    }

    func check(_ world: ShipperWorld) {
        #expect(world.freedTo <= world.freeLimit, "freed to \(world.freedTo) past an unacked batch starting at \(world.freeLimit)")
        for (start, sequences) in world.sequencesByStart {
            #expect(sequences.count == 1, "events from \(start) cut under sequences \(sequences)")
        }
        for written in world.batchesWritten {
            #expect(world.cuts[written.sequence]?.start == written.start, "batch \(written.sequence) sent with other events")
        }
    }
}
