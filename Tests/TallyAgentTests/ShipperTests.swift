import Logging
import Synchronization
import TallyAgent
import TallyConfig
import TallyCore
import TallySpool
import TallyTestSupport
import TallyWire
import Testing

extension Shipper.Settings {
    /// Handshake and ack timeouts of 300 s. These tests are about where batches go, not about
    /// giving up on a slow collector: loaded runs took an in-test collector past the default 10 s
    /// handshake, and the agent moved to the other one (a CI run of the id-picks test; the picked
    /// collector of the resend test never saw a batch). A test of the timeouts sets its own.
    mutating func waitForSlowCollectors() {
        handshakeTimeout = .seconds(300)
        ackTimeout = .seconds(300)
    }
}

/// A spool with `count` events and a shipper for it, run until `body` returns.
func withShipper(
    events count: Int, collectors: [HostPort], agentId: String = "test-agent", key: String? = nil,
    configure: (inout Shipper.Settings) -> Void = { _ in },
    _ body: (Spool, Shipper) async throws -> Void
) async throws {
    let spool = try await Spool.open(directory: temporaryDirectory())
    var index = 0
    while index < count {
        let chunk = min(500, count - index)
        try await spool.append((index..<(index + chunk)).map { event($0) })
        index += chunk
    }
    var settings = Shipper.Settings(collectors: collectors, agentId: agentId, key: key)
    settings.batching.maxEvents = 100
    settings.batching.linger = .milliseconds(5)
    settings.window = 4
    settings.reconnect.initial = .milliseconds(5)
    settings.reconnect.maximum = .milliseconds(50)
    settings.reconnect.afterFatalError = .milliseconds(50)
    settings.waitForSlowCollectors()
    configure(&settings)
    let shipper = Shipper(spool: spool, settings: settings, metrics: AgentMetrics(), logger: testLogger)
    let task = Task { try await shipper.run() }
    do {
        try await body(spool, shipper)
    } catch {
        shipper.stop()
        _ = await task.result
        await spool.close()
        throw error
    }
    shipper.stop()
    let result = await task.result
    await spool.close()
    try result.get()
}

/// Two collectors listed so that `agentId`'s rotation starts at `picked` and moves on to `other`.
func collectors(picked: HostPort, other: HostPort, agentId: String = "test-agent") -> [HostPort] {
    CollectorRotation.start(agentId: agentId, count: 2).index == 0 ? [picked, other] : [other, picked]
}

func loopback(_ port: Int) -> HostPort { HostPort(host: "127.0.0.1", port: port) }

@Suite("Shipper against an in-test collector")
struct ShipperTests {
    @Test func deliversEveryEventAndAcksFreeTheSpool() async throws {
        let collector = TestCollector()
        let port = try await collector.start()
        try await withShipper(events: 1_050, collectors: [.init(host: "127.0.0.1", port: port)]) { spool, shipper in
            #expect(await eventually { collector.distinctEvents == 1_050 })
            #expect(await eventually { (try? await spool.stats().events) == 0 })
            let sequences = collector.received.map(\.sequence)
            #expect(sequences == sequences.sorted())
            #expect(Set(sequences).count == sequences.count)
            #expect(collector.received.allSatisfy { $0.events.count <= 100 })
            // New events keep flowing after the backlog.
            try await spool.append([event(5_000)])
            shipper.spoolAppended()
            #expect(await eventually { collector.distinctEvents == 1_051 })
        }
        await collector.stop()
    }

    @Test func reconnectResendsUnackedBatchesWithTheSameSequences() async throws {
        // The first connection takes two batches and is cut without acking either.
        let collector = TestCollector(behaviour: { $0 == 1 ? .init(cutAfterBatches: 2) : .init() })
        let port = try await collector.start()
        try await withShipper(events: 400, collectors: [.init(host: "127.0.0.1", port: port)]) { spool, _ in
            #expect(await eventually { collector.distinctEvents == 400 })
            #expect(await eventually { (try? await spool.stats().events) == 0 })
            let first = collector.received.filter { $0.connection == 1 }
            let later = collector.received.filter { $0.connection > 1 }
            #expect(!first.isEmpty)
            for batch in first {
                let resent = later.first { $0.sequence == batch.sequence }
                #expect(resent?.events == batch.events, "batch \(batch.sequence) was not resent with the same events")
            }
            // Resent batches come before any newer one.
            let laterSequences = later.map(\.sequence)
            #expect(Array(laterSequences.prefix(first.count)) == first.map(\.sequence).sorted())
        }
        await collector.stop()
    }

    /// A collector that welcomes the agent and then drops every batch unacknowledged must not be
    /// hammered: the backoff resets only once a batch is acknowledged (it once reset after every
    /// handshake: about 11 reconnects a second with the default delays, and a flooded log).
    @Test func aCollectorThatNeverAcksIsBackedOffFrom() async throws {
        let collector = TestCollector(behaviour: { _ in .init(cutAfterBatches: 1) })
        let port = try await collector.start()
        try await withShipper(
            events: 300, collectors: [.init(host: "127.0.0.1", port: port)],
            configure: {
                $0.reconnect.initial = .milliseconds(5)
                $0.reconnect.maximum = .milliseconds(400)
            }
        ) { _, _ in
            let started = ContinuousClock.now
            #expect(await eventually { collector.connections >= 3 })
            // Measure over two seconds: with a reset per handshake the delay would stay under
            // 5 ms (hundreds of connections); growing to 400 ms it allows a few dozen at most.
            let window = ContinuousClock.now + .seconds(2)
            while ContinuousClock.now < window { try? await Task.sleep(for: .milliseconds(50)) }
            let connections = collector.connections
            #expect(connections < 60, "\(connections) connections in \(ContinuousClock.now - started)")
        }
        await collector.stop()
    }

    /// The collector the agent id picks is down: the agent moves on to the other one, and every
    /// event is acked there. Both list orders are run, so the agent cannot pass by always trying
    /// one fixed slot first; `lastError` naming the dead port proves it was tried.
    @Test(arguments: ["edge-a", "edge-b"])
    func movesOnWhenThePickedCollectorIsDown(agentId: String) async throws {
        // Bound and never listening for the whole test: no other test's listener can take it.
        let deadPort = try DeadPort()
        defer { deadPort.close() }
        let dead = deadPort.port
        let collector = TestCollector()
        let port = try await collector.start()
        let list = collectors(picked: loopback(dead), other: loopback(port), agentId: agentId)
        try await withShipper(events: 250, collectors: list, agentId: agentId) { spool, shipper in
            #expect(await eventually { collector.distinctEvents == 250 })
            #expect(await eventually { shipper.status.snapshot.connectedTo == loopback(port) })
            #expect(await eventually { (try? await spool.stats().events) == 0 })
            // Said in words, naming the collector: not a dump of NIO's error types.
            let lastError = shipper.status.snapshot.lastError ?? "no error"
            #expect(lastError == "\(loopback(dead)): connection refused (is a collector listening there?)", "\(lastError)")
        }
        await collector.stop()
    }

    /// Agents with the same list start where their ids point: each collector sees exactly the
    /// agents its index was picked for.
    @Test func agentsStartAtTheCollectorTheirIdPicks() async throws {
        let first = TestCollector()
        let second = TestCollector()
        let list = [loopback(try await first.start()), loopback(try await second.start())]
        let ids = ["edge-a", "edge-b", "agent-1", "agent-2", "agent-3", "agent-4"]
        var expected = [0, 0]
        for (round, agentId) in ids.enumerated() {
            let picked = CollectorRotation.start(agentId: agentId, count: 2).index
            expected[picked] += 1
            let spool = try await Spool.open(directory: temporaryDirectory())
            try await spool.append((0..<20).map { event(round * 100 + $0) })
            var settings = Shipper.Settings(collectors: list, agentId: agentId, key: nil)
            settings.stopWhenDrained = true
            settings.waitForSlowCollectors()
            let shipper = Shipper(spool: spool, settings: settings, metrics: AgentMetrics(), logger: testLogger)
            try await shipper.run()
            await spool.close()
            #expect([first.connections, second.connections] == expected, "after \(agentId) (picks \(picked))")
        }
        // The ids were chosen to use both collectors.
        #expect(expected.allSatisfy { $0 > 0 })
        // (The test collector keys batches by sequence alone, so count what arrived, not its commits.)
        let delivered = Set((first.received + second.received).flatMap(\.events).map { Fingerprint(of: $0) })
        #expect(delivered.count == 20 * ids.count)
        await first.stop()
        await second.stop()
    }

    /// The picked collector takes batches without acking them and then dies: the agent moves to
    /// the other collector and resends every one of them there, same sequence, same events.
    @Test func unackedBatchesAreResentToTheNextCollector() async throws {
        let picked = TestCollector(behaviour: { _ in .init(cutAfterBatches: 2) })
        let other = TestCollector()
        let pickedPort = try await picked.start()
        let otherPort = try await other.start()
        try await withShipper(events: 400, collectors: collectors(picked: loopback(pickedPort), other: loopback(otherPort))) {
            spool, shipper in
            #expect(await eventually { picked.received.count >= 2 })
            await picked.stop()
            #expect(await eventually { other.distinctEvents == 400 })
            #expect(await eventually { (try? await spool.stats().events) == 0 })
            #expect(shipper.status.snapshot.connectedTo == loopback(otherPort))
            let unacked = picked.received
            #expect(!unacked.isEmpty)
            for batch in unacked {
                let resent = other.received.first { $0.sequence == batch.sequence }
                #expect(resent?.events == batch.events, "batch \(batch.sequence) was not resent to the next collector with the same events")
            }
            #expect(other.connections == 1)
        }
        await other.stop()
    }

    @Test func goawayFinishesInFlightAndMovesOn() async throws {
        let first = TestCollector(behaviour: { _ in .init(goawayAfterAcks: 1) })
        let second = TestCollector()
        let firstPort = try await first.start()
        let secondPort = try await second.start()
        try await withShipper(events: 600, collectors: collectors(picked: loopback(firstPort), other: loopback(secondPort))) {
            spool, _ in
            #expect(await eventually { (try? await spool.stats().events) == 0 })
            let fingerprints = Set((first.received + second.received).flatMap(\.events).map { Fingerprint(of: $0) })
            #expect(fingerprints.count == 600)
            #expect(second.distinctEvents > 0)
            #expect(first.connections >= 1)
        }
        await first.stop()
        await second.stop()
    }

    @Test func authenticatesWithTheKeyAndRefusesAnImpostor() async throws {
        let collector = TestCollector(keyring: AgentKeyring(keys: ["test-agent": AgentKey(secret: Array("s3cret".utf8))]))
        let port = try await collector.start()
        try await withShipper(events: 10, collectors: [.init(host: "127.0.0.1", port: port)], key: "s3cret") { spool, _ in
            #expect(await eventually { collector.distinctEvents == 10 })
        }
        // A wrong key: the collector refuses, nothing is acked, the spool keeps every event.
        try await withShipper(events: 10, collectors: [.init(host: "127.0.0.1", port: port)], key: "wrong") { spool, shipper in
            #expect(await eventually { shipper.status.snapshot.lastError?.contains("authentication_failed") == true })
            #expect((try? await spool.stats().events) == 10)
        }
        await collector.stop()
    }

    @Test func drainModeStopsWhenEverythingIsAcked() async throws {
        let collector = TestCollector()
        let port = try await collector.start()
        let spool = try await Spool.open(directory: temporaryDirectory())
        try await spool.append((0..<300).map { event($0) })
        var settings = Shipper.Settings(collectors: [.init(host: "127.0.0.1", port: port)], agentId: "test-agent", key: nil)
        settings.stopWhenDrained = true
        settings.batching.maxEvents = 100
        let shipper = Shipper(spool: spool, settings: settings, metrics: AgentMetrics(), logger: testLogger)
        try await shipper.run()
        #expect(collector.distinctEvents == 300)
        #expect(try await spool.stats().events == 0)
        await spool.close()
        await collector.stop()
    }

    @Test func sequencesAreNeverReusedAfterARestart() async throws {
        let collector = TestCollector()
        let port = try await collector.start()
        let directory = temporaryDirectory()
        var seen: [UInt64] = []
        for round in 0..<2 {
            let spool = try await Spool.open(directory: directory)
            try await spool.append((0..<50).map { event(round * 1_000 + $0) })
            var settings = Shipper.Settings(collectors: [.init(host: "127.0.0.1", port: port)], agentId: "test-agent", key: nil)
            settings.stopWhenDrained = true
            settings.batching.maxEvents = 20
            try await Shipper(spool: spool, settings: settings, metrics: AgentMetrics(), logger: testLogger).run()
            await spool.close()
            let sequences = collector.received.map(\.sequence).filter { !seen.contains($0) }
            #expect(!sequences.isEmpty)
            #expect(sequences.allSatisfy { sequence in seen.allSatisfy { $0 < sequence } })
            seen += sequences
        }
        #expect(collector.distinctEvents == 100)
        await collector.stop()
    }
}
