import Foundation
import NIOCore
import Testing
import TallyCore
import TallyLedger
import TallyWire

/// The collector as a real process on loopback, driven by a scripted agent: duplicates within
/// and across batches, a replay after a reconnect, a connection cut mid-frame, corrupt frames,
/// bad credentials, late, too-old and future events — then every ack and every stored aggregate
/// checked exactly.
@Suite(.serialized) struct CollectorProtocolTests {
    static let config = """
        agents:
          - id: edge-1
            secret: s3cret-0123456789ab
            tenants: [acme, globex]
        late:
          grace: 1h
          max_age: 100d
        dedupe_horizon: 100d
        """

    static func startCollector(in directory: URL, environment: [String: String] = [:]) async throws -> ServiceProcess {
        let configURL = directory.appendingPathComponent("collector.yaml")
        try config.write(to: configURL, atomically: true, encoding: .utf8)
        return try await ServiceProcess(
            directory: directory,
            arguments: ["--config", configURL.path, "--store", "sqlite:\(directory.path)/ledger.db"],
            environment: environment)
    }

    static func event(
        _ tenant: String, metric: String = "api_calls", _ quantity: Int128, at time: EventTime, id: String? = nil
    ) -> UsageEvent {
        UsageEvent(
            tenant: tenant, metric: metric, quantity: Quantity(nanos: quantity * Quantity.nanosPerUnit), timestamp: time,
            id: id, properties: Properties([("endpoint", "/v1/search")]))
    }

    func ack(_ frame: Frame?) throws -> BatchAck {
        guard case .ack(let ack)? = frame else { throw HarnessError("expected an ack, got \(String(describing: frame))") }
        return ack
    }

    func errorCode(_ frame: Frame?) -> WireErrorCode? {
        guard case .error(let error)? = frame else { return nil }
        return WireErrorCode(rawValue: error.code)
    }

    @Test func scriptedAgentAgainstTheRealCollector() async throws {
        let directory = try ServiceProcess.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let collector = try await Self.startCollector(in: directory)
        defer { collector.kill() }

        let now = EventTime.now()
        let base = now.advanced(by: .seconds(-600))
        let period = BillingPeriod(containing: base)
        // Two periods back: always closed (grace 1h) and within the 100-day limit.
        let latePeriod = period.previous.previous
        let lateTime = latePeriod.start.advanced(by: .seconds(86_400))
        let e = (1...5).map { Self.event("acme", Int128($0), at: base.advanced(by: .seconds(Int64($0))), id: "r\($0)") }

        step("bad credentials")
        // Bad credentials: an error with its code, then the connection closes.
        let wrongKey = try ScriptedAgent(port: collector.port)
        #expect(errorCode(try wrongKey.handshake(agentId: "edge-1", secret: "not-the-key")) == .authenticationFailed)
        #expect(try wrongKey.receive() == nil)
        let stranger = try ScriptedAgent(port: collector.port)
        #expect(errorCode(try stranger.handshake(agentId: "nobody", secret: "x")) == .unknownAgent)

        step("batch 1")
        // Batch 1: five events, the first one twice.
        let agent = try ScriptedAgent(port: collector.port)
        guard case .welcome(let welcome)? = try agent.handshake(agentId: "edge-1", secret: "s3cret-0123456789ab") else {
            Issue.record("no welcome")
            return
        }
        #expect(welcome.authenticated)
        let ack1 = try ack(agent.sendBatch(sequence: 1, events: e + [e[0]]))
        #expect(ack1 == BatchAck(sequence: 1, accepted: 5, duplicate: 1))

        step("batch 2")
        // Batch 2: a duplicate across batches, a new event, late, too old, future, negative, a
        // tenant outside the key's allow-list.
        let batch2 = [
            e[2],
            Self.event("globex", metric: "bytes_out", 1000, at: base.advanced(by: .seconds(30)), id: "g1"),
            Self.event("acme", 7, at: lateTime, id: "late-1"),
            Self.event("acme", 1, at: now.advanced(by: .seconds(-120 * 86_400)), id: "old-1"),
            Self.event("acme", 1, at: now.advanced(by: .seconds(7200)), id: "future-1"),
            Self.event("acme", -3, at: base, id: "negative-1"),
            Self.event("initech", 1, at: base, id: "other-tenant"),
        ]
        let ack2 = try ack(agent.sendBatch(sequence: 2, events: batch2))
        #expect(ack2.accepted == 1 && ack2.duplicate == 1 && ack2.late == 1 && ack2.rejected == 4)
        #expect(ack2.rejections.map(\.index) == [3, 4, 5, 6])
        #expect(ack2.rejections.map(\.reason) == [.tooOld, .futureTimestamp, .invalidField, .invalidField])

        step("torn")
        // A connection cut in the middle of a frame: nothing of it is written.
        let batch3 = [Self.event("acme", 10, at: base.advanced(by: .seconds(40)), id: "r10")]
        let torn = try ScriptedAgent(port: collector.port)
        _ = try torn.handshake(agentId: "edge-1", secret: "s3cret-0123456789ab")
        let batch3Bytes = try torn.frameBytes(torn.batchFrame(sequence: 3, events: batch3))
        try torn.sendRaw(Array(batch3Bytes.prefix(batch3Bytes.count / 2)))
        _ = consume torn

        step("replay")
        // Reconnect: a replayed batch gets its original ack and touches nothing; then batch 3.
        let again = try ScriptedAgent(port: collector.port)
        _ = try again.handshake(agentId: "edge-1", secret: "s3cret-0123456789ab")
        #expect(try ack(again.sendBatch(sequence: 2, events: batch2)) == ack2)
        #expect(try ack(again.sendBatch(sequence: 1, events: e + [e[0]])) == ack1)
        #expect(try ack(again.sendBatch(sequence: 3, events: batch3)) == BatchAck(sequence: 3, accepted: 1))
        // A committed sequence sent again with other events is refused, never answered with the
        // old ack (which would let the agent delete events that were not stored).
        let reused = [Self.event("acme", 99, at: base.advanced(by: .seconds(50)), id: "reused")]
        #expect(errorCode(try again.sendBatch(sequence: 3, events: reused)) == .sequenceReused)

        step("corrupt")
        // Corrupt frames: an error with its code, the connection closed, nothing written.
        let badCRC = try ScriptedAgent(port: collector.port)
        _ = try badCRC.handshake(agentId: "edge-1", secret: "s3cret-0123456789ab")
        var corrupt = try badCRC.frameBytes(badCRC.batchFrame(sequence: 4, events: [Self.event("acme", 100, at: base, id: "crc")]))
        corrupt[corrupt.count - 1] ^= 0xFF
        try badCRC.sendRaw(corrupt)
        #expect(errorCode(try badCRC.receive()) == .checksumMismatch)
        #expect(try badCRC.receive() == nil)

        step("bomb")
        let bomber = try ScriptedAgent(port: collector.port)
        _ = try bomber.handshake(agentId: "edge-1", secret: "s3cret-0123456789ab")
        let bomb = try ZstdCompressor(level: 1).compress([UInt8](repeating: 0, count: 64 << 20))
        var payload = ByteBuffer()
        payload.writeInteger(BatchPayloadLayout.version)
        payload.writeInteger(UInt32(1))
        payload.writeInteger(BatchPayloadLayout.Encoding.zstd.rawValue)
        payload.writeInteger(UInt32(1024))
        payload.writeInteger(UInt32(bomb.count))
        payload.writeBytes(bomb)
        try bomber.send(.batch(Batch(sequence: 5, payload: payload)))
        #expect(errorCode(try bomber.receive()) == .payloadTooLarge)
        #expect(try bomber.receive() == nil)

        step("huge")
        let huge = try ScriptedAgent(port: collector.port)
        _ = try huge.handshake(agentId: "edge-1", secret: "s3cret-0123456789ab")
        // A header announcing a 1 GiB body: refused from the header alone.
        try huge.sendRaw([0x54, 0x4C, 1, FrameType.batch.rawValue, 0, 0x40, 0, 0, 0])
        #expect(errorCode(try huge.receive()) == .frameTooLarge)

        let garbage = try ScriptedAgent(port: collector.port)
        try garbage.sendRaw(Array("GET / HTTP/1.1\r\n\r\n".utf8))
        #expect(errorCode(try garbage.receive()) == .malformedFrame)

        step("stop")
        #expect(await collector.stop() == 0)

        // The ledger, read back: exactly the accepted events, each once.
        let store = try SQLiteLedgerStore(path: directory.appendingPathComponent("ledger.db").path)
        defer { store.close() }
        let acme = try store.periodTotals(tenant: "acme", metric: "api_calls", period: period)
        #expect(acme.usage?.sum == Quantity(25))
        #expect(acme.usage?.count == 6)
        #expect(acme.usage?.max == Quantity(10))
        let adjustment = acme.adjustments.first { $0.original == latePeriod }
        #expect(adjustment?.aggregate.sum == Quantity(7))
        #expect(adjustment?.aggregate.count == 1)
        let globex = try store.periodTotals(tenant: "globex", metric: "bytes_out", period: period)
        #expect(globex.usage?.sum == Quantity(1000))
        var total = ReconciliationCounts()
        for row in try store.reconciliation(ReconciliationFilter(agent: "edge-1")) { total.add(row.counts) }
        #expect(total.received == 14)
        #expect(total.accepted == 7)
        #expect(total.duplicate == 2)
        #expect(total.late == 1)
        #expect(total.rejected == 4)
        #expect(total.balances)
    }

    /// A window of batches written in one go: the collector commits them in the order they
    /// came (whatever it does ahead of the commits), so the first batch to hold an event is the
    /// one that bills it and every later copy is its duplicate, and the acks come back in order. A batch in the
    /// middle that is not a valid payload is answered with an error after the acks of the batches
    /// before it, and the connection closes: the batches after it are not committed (the agent
    /// sends them again).
    @Test func batchesWrittenTogetherAreCommittedInTheirOrder() async throws {
        let directory = try ServiceProcess.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let collector = try await Self.startCollector(in: directory)
        defer { collector.kill() }
        let agent = try ScriptedAgent(port: collector.port)
        guard case .welcome? = try agent.handshake(agentId: "edge-1", secret: "s3cret-0123456789ab") else {
            Issue.record("no welcome")
            return
        }
        let base = EventTime.now().advanced(by: .seconds(-600))
        // Batch k holds events k-1 ... k+198 of one series: each overlaps the one before it but
        // for its first event, so with batches committed in order batch 1 accepts 200 events and
        // every later one accepts 1 and finds 199 duplicates.
        let series = (0..<210).map { Self.event("acme", 1, at: base.advanced(by: .seconds(Int64($0))), id: "p\($0)") }
        var bytes: [UInt8] = []
        for sequence in 1...8 {
            let start = sequence == 1 ? 0 : sequence - 1
            if sequence == 5 {
                bytes += try agent.frameBytes(.batch(Batch(sequence: 5, payload: ByteBuffer(bytes: [0x01, 0x02, 0x03]))))
                continue
            }
            bytes += try agent.frameBytes(agent.batchFrame(sequence: UInt64(sequence), events: Array(series[start..<(start + 200)])))
        }
        try agent.sendRaw(bytes)
        var answers: [String] = []
        for _ in 1...8 {
            switch try agent.receive() {
            case .ack(let ack)?: answers.append("\(ack.sequence):\(ack.accepted)/\(ack.duplicate)")
            case .error(let error)?: answers.append("error \(WireErrorCode(rawValue: error.code).map { "\($0)" } ?? "?")")
            case let other: answers.append("\(String(describing: other))")
            }
            if answers.last?.hasPrefix("error") == true { break }
        }
        #expect(answers.first == "1:200/0")
        #expect(Array(answers.dropFirst().prefix(3)) == ["2:1/199", "3:1/199", "4:1/199"])
        #expect(answers.count == 5 && answers.last?.hasPrefix("error") == true, "\(answers)")
        // Batch 6 was not committed: sent again with other events, it is a new batch (a
        // committed one would be refused as a reused sequence).
        let again = try ScriptedAgent(port: collector.port)
        _ = try again.handshake(agentId: "edge-1", secret: "s3cret-0123456789ab")
        #expect(try ack(again.sendBatch(sequence: 6, events: Array(series[100..<110]))) == BatchAck(sequence: 6, accepted: 0, duplicate: 10))
    }

    @Test func killedBetweenCommitAndAckThenResentIsStoredOnce() async throws {
        let directory = try ServiceProcess.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let base = EventTime.now().advanced(by: .seconds(-300))
        let events = (1...50).map { Self.event("acme", Int128($0), at: base.advanced(by: .seconds(Int64($0))), id: "k\($0)") }

        // This collector commits the batch and dies by SIGKILL before the ack leaves.
        let doomed = try await Self.startCollector(in: directory, environment: ["TALLY_FAULT": "kill-after-commit"])
        let agent = try ScriptedAgent(port: doomed.port)
        _ = try agent.handshake(agentId: "edge-1", secret: "s3cret-0123456789ab")
        try agent.send(agent.batchFrame(sequence: 1, events: events))
        #expect(try agent.receive() == nil)  // no ack: the connection died
        let exit = await doomed.waitForExit()
        #expect(exit.reason == .uncaughtSignal && exit.status == SIGKILL)

        // Restarted, the same batch is answered with the original outcome and stored once.
        let collector = try await Self.startCollector(in: directory)
        defer { collector.kill() }
        let retry = try ScriptedAgent(port: collector.port)
        _ = try retry.handshake(agentId: "edge-1", secret: "s3cret-0123456789ab")
        #expect(try ack(retry.sendBatch(sequence: 1, events: events)) == BatchAck(sequence: 1, accepted: 50))
        // The same events under a new sequence (an agent that lost its spool checkpoint) are
        // duplicates, not new usage.
        #expect(try ack(retry.sendBatch(sequence: 2, events: events)) == BatchAck(sequence: 2, accepted: 0, duplicate: 50))
        #expect(await collector.stop() == 0)

        let store = try SQLiteLedgerStore(path: directory.appendingPathComponent("ledger.db").path)
        defer { store.close() }
        let totals = try store.periodTotals(tenant: "acme", metric: "api_calls", period: BillingPeriod(containing: base))
        #expect(totals.usage?.count == 50)
        #expect(totals.usage?.sum == Quantity(1275))
    }

    @Test func killedAtAnyMomentAfterSendingThenResentIsStoredOnce() async throws {
        let directory = try ServiceProcess.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let base = EventTime.now().advanced(by: .seconds(-300))
        let events = (1...200).map { Self.event("acme", 1, at: base.advanced(by: .seconds(Int64($0))), id: "m\($0)") }
        let first = try await Self.startCollector(in: directory)
        let agent = try ScriptedAgent(port: first.port)
        _ = try agent.handshake(agentId: "edge-1", secret: "s3cret-0123456789ab")
        // SIGKILL as soon as the batch is written: the commit may or may not have happened.
        try agent.send(agent.batchFrame(sequence: 7, events: events))
        first.kill()

        let collector = try await Self.startCollector(in: directory)
        defer { collector.kill() }
        let retry = try ScriptedAgent(port: collector.port)
        _ = try retry.handshake(agentId: "edge-1", secret: "s3cret-0123456789ab")
        let answer = try ack(retry.sendBatch(sequence: 7, events: events))
        #expect(answer.accepted == 200 && answer.duplicate == 0)
        #expect(await collector.stop() == 0)
        let store = try SQLiteLedgerStore(path: directory.appendingPathComponent("ledger.db").path)
        defer { store.close() }
        #expect(try store.periodTotals(tenant: "acme", metric: "api_calls", period: BillingPeriod(containing: base)).usage?.count == 200)
    }
}

func step(_ name: String) {
    FileHandle.standardError.write(Data("[e2e] \(name)\n".utf8))
}
