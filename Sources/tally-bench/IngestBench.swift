import ArgumentParser
import Foundation
import Logging
import NIOCore
import TallyCollector
import TallyCore
import TallyLedger
import TallyWire
import TallyPricing
import TallyWorkload

/// `tally-bench ingest`: the collector's ingest rate from pre-encoded batches of the reference
/// workload, sent over loopback to the real protocol server and committed durably (WAL,
/// synchronous=FULL) with dedupe and aggregates; and the bytes per event on the wire beside the
/// same events as NDJSON and as `zstd -1` of that NDJSON; and the SQLite floor (``SQLiteFloor``:
/// the same events inserted through the C API and nothing else) beside the writer's figure.
struct IngestBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ingest", abstract: "Collector ingest over loopback into durable SQLite, and wire bytes per event.")
    @Option(help: "Reference-workload lines to generate.") var events = 1_000_000
    @Option(help: "Events per batch.") var batch = 1000
    @Option(help: "The ledger file (recreated).") var path = "./tally-bench-data/ingest.db"
    @Option(
        help: "A pricing file whose group-by properties and unique counts the ledger aggregates, as a collector with it does ('' for none).")
    var pricing = ""
    @Option(help: "Logged aggregate cells that make the writer fold (the collector's default: 1,000,000).")
    var aggregateBuffer = LedgerConfiguration().aggregateBufferCells

    func run() async throws {
        let start = EventTime.now().advanced(by: .seconds(-Int64(events / 100) - 600))
        let workload = try ReferenceWorkload(WorkloadConfiguration(seed: 1, events: events, start: start, rate: 100))
        var ndjson: [UInt8] = []
        var usage: [UsageEvent] = []
        for line in workload {
            ndjson.append(contentsOf: line.bytes)
            ndjson.append(0x0A)
            if let event = line.event { usage.append(event) }
        }
        let payloadEncoder = try BatchPayloadEncoder()
        let frameEncoder = FrameEncoder()
        var frames: [[UInt8]] = []
        var wireBytes = 0
        var sequence: UInt64 = 0
        for offset in stride(from: 0, to: usage.count, by: batch) {
            sequence += 1
            let payload = try payloadEncoder.encode(Array(usage[offset..<min(usage.count, offset + batch)]))
            let frame = try frameEncoder.encode(.batch(Batch(sequence: sequence, payload: payload)))
            let bytes = frame.getBytes(at: frame.readerIndex, length: frame.readableBytes) ?? []
            wireBytes += bytes.count
            frames.append(bytes)
        }
        let zstdNDJSON = try ZstdCompressor(level: 1).compress(ndjson).count

        try? FileManager.default.removeItem(atPath: path)
        for suffix in ["-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
        try FileManager.default.createDirectory(
            atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        var configuration = LedgerConfiguration()
        configuration.aggregateBufferCells = aggregateBuffer
        if !pricing.isEmpty {
            configuration = AggregatePricing.ledgerConfiguration(for: try PricingConfigLoader.load(file: pricing), base: configuration)
        }
        let writer = Ledger(store: try LedgerStores.open("sqlite:\(path)", configuration: configuration))
        let server = try await ProtocolServer.bind(
            host: "127.0.0.1", port: 0,
            settings: .init(keyring: AgentKeyring(), limits: .standard, eventLimits: .standard),
            ledger: writer, metrics: CollectorMetrics(), logger: Logger(label: "tally-bench"))
        let port = server.localAddress?.port ?? 0
        let serving = Task { try await server.run() }
        let writerCPUBefore = try await writer.perform { _ throws(LedgerError) in cpuNanoseconds(CLOCK_THREAD_CPUTIME_ID) }
        let processCPUBefore = cpuNanoseconds(CLOCK_PROCESS_CPUTIME_ID)
        let threadsBefore = ThreadSchedule.threads(pid: getpid())
        let began = ContinuousClock.now
        let counted = try await Task.detached { [frames] in try BenchAgent.send(frames, port: port) }.value
        let elapsed = ContinuousClock.now - began
        let processCPU = cpuNanoseconds(CLOCK_PROCESS_CPUTIME_ID) - processCPUBefore
        let writerCPU = try await writer.perform { _ throws(LedgerError) in cpuNanoseconds(CLOCK_THREAD_CPUTIME_ID) } - writerCPUBefore
        // The collector's preparation threads (decode, validate, classify, speculate the cells
        // and their log row, merge committed rows for the readers): the other half of its CPU.
        let preparationCPU = ThreadSchedule.runningByName(from: threadsBefore, to: ThreadSchedule.threads(pid: getpid()))["tally-prepare"] ?? 0
        serving.cancel()
        await writer.shutdown()

        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        let lines = Double(usage.count)
        var table = BenchTable.figures(echo: false)
        let log = try Self.logBytes(usage, batch: batch, configuration: configuration)
        let logRow = (
            "aggregate log per event (each batch's row, SQLite's layout)", "bytes/ev", fixed(Double(log.compact) / lines),
            "\(fixed(Double(log.fixed) / lines)) fixed-width (schema 5)"
        )
        if !pricing.isEmpty {
            // The same run with a collector's aggregation: only the figures that change.
            let suffix = " (group-by of \((pricing as NSString).lastPathComponent), fold at \(grouped(aggregateBuffer)) cells)"
            table.add(
                "ingest over loopback, durable, deduped, aggregated" + suffix, "events/s", String(Int(lines / seconds)),
                "250,000 (target, end to end)")
            table.add("  CPU of the ledger writer thread per event" + suffix, "µs", fixed(Double(writerCPU) / lines / 1000), "≤ 3 (target)")
            table.add("  CPU of the preparation threads per event" + suffix, "µs", fixed(Double(preparationCPU) / lines / 1000), "-")
            table.add("acked accepted + duplicate" + suffix, "events", String(counted), "= \(usage.count) sent")
            table.add(logRow.0 + suffix, logRow.1, logRow.2, logRow.3)
            table.print()
            return
        }
        let floor = try SQLiteFloor.measure(usage, path: path + ".floor")
        let rows: [(String, String, String, String)] = [
            ("events sent (valid lines, retries included)", "events", String(usage.count), "-"),
            ("acked accepted + duplicate", "events", String(counted), "= events sent"),
            ("ingest over loopback, durable, deduped, aggregated", "events/s", String(Int(lines / seconds)), "250,000 (target, end to end)"),
            ("  CPU of the ledger writer thread per event", "µs", fixed(Double(writerCPU) / lines / 1000), "the single-writer limit"),
            ("  CPU of the preparation threads per event", "µs", fixed(Double(preparationCPU) / lines / 1000), "-"),
            (
                "SQLite floor: same events, C API, 1,000 per fsync'd commit", "events/s", String(floor.eventsPerSecond),
                "\(fixed(floor.cpuMicroseconds)) µs CPU per event"
            ),
            ("  CPU of the whole process per event (sender included)", "µs", fixed(Double(processCPU) / lines / 1000), "-"),
            ("wire, batches of \(batch), frames included", "bytes/ev", fixed(Double(wireBytes) / lines), "24 (target)"),
            ("same events as NDJSON", "bytes/ev", fixed(Double(ndjson.count) / lines), "~240 (brief)"),
            ("zstd -1 of the whole NDJSON", "bytes/ev", fixed(Double(zstdNDJSON) / lines), "~37 (brief)"),
            logRow,
        ]
        for row in rows { table.add(row.0, row.1, row.2, row.3) }
        table.print()
    }
}

extension IngestBench {
    /// The aggregate log's bytes for `usage` sent in batches of `batch`: each batch's cells as
    /// the writer logs them (compact), and in the fixed-width layout of schema version 5.
    static func logBytes(_ usage: [UsageEvent], batch: Int, configuration: LedgerConfiguration) throws -> (compact: Int, fixed: Int) {
        var compact = 0
        var fixedWidth = 0
        for offset in stride(from: 0, to: usage.count, by: batch) {
            var cells = AggregateCells()
            for event in usage[offset..<min(usage.count, offset + batch)] {
                try cells.add(event, fingerprint: Fingerprint(of: event), billedIn: nil, groupBy: configuration.groupBy(of: event.metric))
            }
            compact += AggregateLogCodec.encode(cells).count
            fixedWidth += AggregateLogCodec.encode(cells, layout: .byTenant, fields: .levels).count
        }
        return (compact, fixedWidth)
    }
}

/// A minimal blocking agent for the benchmark: open-mode handshake, then a window of 8 batches.
enum BenchAgent {
    static func send(_ frames: [[UInt8]], port: Int) throws -> Int {
        let fd = try BenchSocket.tcp(port: port)
        defer { close(fd) }
        var inbound = ByteBuffer()
        var decoder = FrameDecoder(maxBodyLength: 64 << 20)
        func write(_ bytes: [UInt8]) throws {
            var offset = 0
            while offset < bytes.count {
                let written = bytes[offset...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
                guard written > 0 else { throw ValidationError("write failed") }
                offset += written
            }
        }
        func receive() throws -> Frame {
            while true {
                if let frame = try decoder.decode(buffer: &inbound) { return frame }
                var chunk = [UInt8](repeating: 0, count: 65_536)
                let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                guard count > 0 else { throw ValidationError("the collector closed the connection") }
                inbound.writeBytes(chunk[0..<count])
            }
        }
        let encoder = FrameEncoder()
        func frameBytes(_ frame: Frame) throws -> [UInt8] {
            let buffer = try encoder.encode(frame)
            return buffer.getBytes(at: buffer.readerIndex, length: buffer.readableBytes) ?? []
        }
        try write(frameBytes(.hello(Hello(minVersion: 1, maxVersion: 1, agentId: "bench", agentNonce: Nonce.random(), software: "tally-bench"))))
        guard case .challenge = try receive() else { throw ValidationError("no challenge") }
        try write(frameBytes(.auth(Auth(proof: .none))))
        guard case .welcome = try receive() else { throw ValidationError("no welcome") }
        var next = 0
        var inFlight = 0
        var counted = 0
        while next < frames.count || inFlight > 0 {
            while next < frames.count && inFlight < 8 {
                try write(frames[next])
                next += 1
                inFlight += 1
            }
            guard case .ack(let ack) = try receive() else { throw ValidationError("expected an ack") }
            counted += Int(ack.accepted) + Int(ack.duplicate)
            inFlight -= 1
        }
        return counted
    }
}

/// CPU time in nanoseconds of the calling thread (`CLOCK_THREAD_CPUTIME_ID`) or of the whole
/// process (`CLOCK_PROCESS_CPUTIME_ID`): a cost per event that does not depend on what else the
/// machine is running.
func cpuNanoseconds(_ clock: clockid_t) -> Int64 {
    var time = timespec()
    clock_gettime(clock, &time)
    return Int64(time.tv_sec) * 1_000_000_000 + Int64(time.tv_nsec)
}
