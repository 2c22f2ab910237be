import ArgumentParser
import Foundation
import NIOCore
import TallyCollector
import TallyCore
import TallyLedger
import TallyPricing
import TallySpool
import TallyWire
import TallyWorkload

/// `tally-bench prepare`: the CPU per event of the collector's preparation steps, each on one
/// thread and timed by that thread's own clock (`CLOCK_THREAD_CPUTIME_ID`): decoding a batch
/// payload, validating its events, ``PreparedBatch`` (fingerprints, digest) and the speculation
/// (classification, cells, their log row). The drain's figures move with the host by 10–30%
/// from one run to the next; these are the same work without the other threads, the sockets or
/// the disk, so a change to one step shows in its row (best of `rounds`). Beside them, the
/// agent's side of the same batches while it ships a backlog: decoding the spool records (its
/// spool reading thread) and encoding each payload (columns, then zstd at the shipper's level;
/// its encoding thread), each beside the same through a ``UsageEvent`` per record.
struct PrepareBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prepare",
        abstract:
            "CPU per event of the collector's preparation steps and the agent's record decoding and batch encoding, one thread, best of several rounds."
    )
    @Option(help: "Reference-workload lines to generate.") var events = 300_000
    @Option(help: "Events per batch.") var batch = 1000
    @Option(help: "Rounds over all the batches; each step's best round is shown.") var rounds = 5
    @Option(help: "A pricing file whose group-by properties and unique counts are aggregated ('' for none).")
    var pricing = "deploy/pricing.example.yaml"
    @Option(help: "A scratch ledger file (recreated), for the store's configuration.") var path = "./tally-bench-data/prepare.db"

    func run() async throws {
        let start = EventTime.now().advanced(by: .seconds(-Int64(events / 1000) - 600))
        let workload = try ReferenceWorkload(WorkloadConfiguration(seed: 1, events: events, start: start, rate: 1000))
        let usage = workload.compactMap(\.event)
        let slices = stride(from: 0, to: usage.count, by: batch).map { Array(usage[$0..<min(usage.count, $0 + batch)]) }
        // The shipper's encoding: one encoder at its default level (`Shipper.Settings.compression`,
        // zstd 3), which is also the encoder's.
        let encoder = try BatchPayloadEncoder(compression: .zstd(level: 3))
        let payloads = try slices.map { slice in try encoder.encode(slice) }
        try? FileManager.default.removeItem(atPath: path)
        try FileManager.default.createDirectory(
            atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        var configuration = LedgerConfiguration()
        if !pricing.isEmpty {
            configuration = AggregatePricing.ledgerConfiguration(for: try PricingConfigLoader.load(file: pricing), base: configuration)
        }
        let store = try LedgerStores.open("sqlite:\(path)", configuration: configuration)
        guard let speculator = store.batchSpeculator() else { throw ValidationError("the store makes no speculation") }
        let limits = EventLimits.standard
        let now = EventTime.now()

        var best = [Int64](repeating: .max, count: 4)
        for _ in 0..<rounds {
            var spent = [Int64](repeating: 0, count: 4)
            let decoder = try BatchPayloadDecoder()
            for (sequence, payload) in payloads.enumerated() {
                var mark = cpuNanoseconds(CLOCK_THREAD_CPUTIME_ID)
                func lap(_ step: Int) {
                    let time = cpuNanoseconds(CLOCK_THREAD_CPUTIME_ID)
                    spent[step] += time - mark
                    mark = time
                }
                let decoded = try decoder.decode(payload)
                lap(0)
                let incoming = decoded.map { event -> IncomingEvent in
                    do throws(EventRejection) {
                        try event.validate(limits: limits, now: now)
                        return .valid(event)
                    } catch {
                        return .invalid(InvalidEvent(error, tenant: event.tenant, metric: event.metric, timestamp: event.timestamp, id: event.id))
                    }
                }
                lap(1)
                let prepared = PreparedBatch(IncomingBatch(agent: "bench", sequence: UInt64(sequence + 1), receivedAt: now, events: incoming))
                lap(2)
                withExtendedLifetime(speculator.speculate(prepared)) {}
                lap(3)
            }
            for step in 0..<4 { best[step] = min(best[step], spent[step]) }
        }
        // The agent's side of the same batches, as its ship loop does it: the spool records read
        // as spans (``EventSpans``), which it encodes; beside each, the same through a
        // ``UsageEvent`` per record, the way it shipped before.
        let records = slices.map { slice in slice.map { EventRecordCodec.encode($0) } }
        let spans = slices.map { EventRecordCodec.spans(of: $0) }
        func bestRound(_ work: () throws -> Void) rethrows -> Int64 {
            var best = Int64.max
            for _ in 0..<rounds {
                let began = cpuNanoseconds(CLOCK_THREAD_CPUTIME_ID)
                try work()
                best = min(best, cpuNanoseconds(CLOCK_THREAD_CPUTIME_ID) - began)
            }
            return best
        }
        let readingSpans = try bestRound {
            for batch in records {
                var read = EventSpans()
                for record in batch {
                    try record.withUnsafeBytes { bytes in try EventRecordCodec.decode(bytes, into: &read) }
                }
                withExtendedLifetime(read) {}
            }
        }
        let readingEvents = try bestRound {
            for batch in records { withExtendedLifetime(try batch.map { try EventRecordCodec.decode($0) }) {} }
        }
        let encodingSpans = try bestRound { for batch in spans { _ = try encoder.encode(batch) } }
        let encodingEvents = try bestRound { for slice in slices { _ = try encoder.encode(slice) } }
        let count = Double(usage.count)
        var table = BenchTable.figures(echo: false)
        let names = ["decode the payload", "validate the events", "PreparedBatch (fingerprints, digest)", "speculate (classify, cells, log row)"]
        for (step, name) in names.enumerated() {
            table.add("prepare: \(name), best of \(rounds)", "µs/ev", fixed(Double(best[step]) / count / 1000), "-")
        }
        table.add("prepare: all four steps", "µs/ev", fixed(Double(best.reduce(0, +)) / count / 1000), "-")
        func perEvent(_ nanoseconds: Int64) -> String { fixed(Double(nanoseconds) / count / 1000) }
        table.add(
            "agent: decode the spool records (spans), best of \(rounds)", "µs/ev", perEvent(readingSpans),
            "\(perEvent(readingEvents)) as UsageEvents")
        table.add(
            "agent: encode the payload (columns, zstd 3), best of \(rounds)", "µs/ev", perEvent(encodingSpans),
            "\(perEvent(encodingEvents)) from UsageEvents")
        table.print()
    }
}
