import ArgumentParser
import Foundation
import TallyCore
import TallySpool
import TallyWorkload

#if canImport(Glibc)
import Glibc
#endif

/// `tally-bench spool`: the agent's durable spool alone, in process: appends from several writers
/// (the default fsync policy, group-committed) and the shipper's read-back, beside a floor
/// measured in the same run: the same event records written to one plain file in the same chunks,
/// with an fsync per chunk, and read back with plain reads.
struct SpoolBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "spool", abstract: "The spool alone: group-committed appends and read-back, beside plain write+fsync.")
    @Option(help: "Reference-workload events to append.") var events = 1_000_000
    @Option(help: "Events per append (an HTTP body or a socket chunk).") var chunk = 1_000
    @Option(help: "Concurrent appenders.") var writers = 4
    @Option(help: "The working directory (recreated, removed at the end).") var data = "./tally-bench-data/spool"

    func validate() throws {
        guard events > 0, chunk > 0, writers > 0 else { throw ValidationError("sizes must be positive") }
    }

    func run() async throws {
        let root = URL(fileURLWithPath: data).standardizedFileURL.path
        try? FileManager.default.removeItem(atPath: root)
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let start = EventTime.now().advanced(by: .seconds(-Int64(events / 100) - 600))
        let workload = try ReferenceWorkload(WorkloadConfiguration(seed: 1, events: events, start: start, rate: 100))
        let usage = workload.compactMap(\.event)
        let chunks = stride(from: 0, to: usage.count, by: chunk).map { Array(usage[$0..<min(usage.count, $0 + chunk)]) }
        var table = BenchTable.figures()
        table.add("events (reference workload, valid lines)", "events", String(usage.count), "-")

        // The floor: the same records, one plain file, write(2) + fsync per chunk, one writer.
        let floorPath = root + "/floor.bin"
        let encoded = chunks.map { events in
            var out: [UInt8] = []
            for event in events { EventRecordCodec.encode(event, into: &out) }
            return out
        }
        let floorWrite = try plainAppend(encoded, path: floorPath)
        let floorRead = try plainRead(floorPath)

        let spool = try await Spool.open(directory: root + "/spool")
        let began = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for writer in 0..<writers {
                group.addTask {
                    for index in stride(from: writer, to: chunks.count, by: writers) { try await spool.append(chunks[index]) }
                }
            }
            try await group.waitForAll()
        }
        let appendTime = ContinuousClock.now - began
        let stats = try await spool.stats()
        // Read back twice: as the shipper reads (spans), then as events (one `UsageEvent` each).
        let readBegan = ContinuousClock.now
        var read = 0
        var spans = try await spool.readSpans(from: SpoolPosition(segment: 0, offset: 0), maxEvents: 1_000)
        while !spans.events.isEmpty {
            read += spans.events.count
            spans = try await spool.readSpans(from: spans.end, maxEvents: 1_000)
        }
        let readTime = ContinuousClock.now - readBegan
        let eventsBegan = ContinuousClock.now
        var readAsEvents = 0
        var batch = try await spool.readFromAcknowledged(maxEvents: 1_000)
        while !batch.events.isEmpty {
            readAsEvents += batch.events.count
            batch = try await spool.read(from: batch.end, maxEvents: 1_000)
        }
        let eventsTime = ContinuousClock.now - eventsBegan
        await spool.close()

        let count = Double(usage.count)
        table.add(
            "spool append, \(writers) writers, chunks of \(chunk), fsync interval (default)", "events/s",
            String(Int(count / appendTime.seconds)),
            "\(Int(count / floorWrite.seconds)) (plain write + fsync per chunk)")
        table.add(
            "spool read-back, batches of 1,000 (the shipper's reads: spans)", "events/s", String(Int(Double(read) / readTime.seconds)),
            "\(Int(count / floorRead.seconds)) (plain read, no decoding)")
        table.add(
            "spool read-back as UsageEvents (tallyctl's reads)", "events/s", String(Int(Double(readAsEvents) / eventsTime.seconds)),
            "\(Int(Double(read) / readTime.seconds)) as spans")
        table.add(
            "spool bytes on disk per event", "bytes", fixed(Double(stats.bytesOnDisk) / count),
            "\(fixed(Double(encoded.reduce(0) { $0 + $1.count }) / count)) (records without framing)")
        table.add("events read back = events appended", "events", String(read), String(usage.count))
        table.print()
        guard read == usage.count, readAsEvents == usage.count, stats.events == usage.count else {
            throw BenchFailure("the spool holds \(stats.events) events and read back \(read); \(usage.count) were appended")
        }
    }

    private func plainAppend(_ chunks: [[UInt8]], path: String) throws -> Duration {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw BenchFailure("open \(path): errno \(errno)") }
        defer { close(fd) }
        let began = ContinuousClock.now
        for bytes in chunks {
            let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            guard written == bytes.count, fsync(fd) == 0 else { throw BenchFailure("write or fsync \(path): errno \(errno)") }
        }
        return ContinuousClock.now - began
    }

    private func plainRead(_ path: String) throws -> Duration {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw BenchFailure("open \(path): errno \(errno)") }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        let began = ContinuousClock.now
        while buffer.withUnsafeMutableBytes({ read(fd, $0.baseAddress, $0.count) }) > 0 {}
        return ContinuousClock.now - began
    }
}
