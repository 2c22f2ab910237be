import TallyCore
import TallySpool

#if canImport(Glibc)
import Glibc
#endif

/// Restart time with a large backlog: fills a spool to `bytes` with default options, then times
/// an open (with summaries, as an agent restarts) and an open that has to scan everything (no
/// summaries; the brief's baseline). Uses only the public API, so it can also be compiled on its
/// own with `swiftc -O` instead of a release build of the whole package (see `ReopenBenchmarkTests`):
/// ```
/// F="-O -wmo -swift-version 6 -enable-upcoming-feature ExistentialAny -enable-upcoming-feature InternalImportsByDefault -parse-as-library"
/// swiftc $F -module-name TallyCore -emit-module -emit-module-path out/TallyCore.swiftmodule -c -o out/TallyCore.o \
///     $(find Sources/TallyCore -name '*.swift' ! -name Fingerprint.swift)
/// swiftc $F -I out -module-name TallySpool -emit-module -emit-module-path out/TallySpool.swiftmodule -c -o out/TallySpool.o Sources/TallySpool/*.swift
/// # main.swift: for line in try await ReopenBenchmark.run(directory: "...", bytes: 1 << 30) { print(line) }
/// swiftc -O -wmo -swift-version 6 -I out main.swift Tests/TallySpoolTests/ReopenBenchmark.swift out/*.o -o reopen-bench
/// ```
enum ReopenBenchmark {
    static func run(directory: String, bytes: Int64) async throws -> [String] {
        var options = SpoolOptions()
        options.fsync = .never
        let spool = try await Spool.open(directory: directory, options: options)
        var index = 0
        while try await spool.stats().bytesOnDisk < bytes {
            try await spool.append((0..<10_000).map { event(index + $0) })
            index += 10_000
        }
        let written = try await spool.stats()
        await spool.close()

        let clock = ContinuousClock()
        var reopened: Spool?
        let withSummaries = try await clock.measure { reopened = try await Spool.open(directory: directory, options: SpoolOptions()) }
        guard let restarted = reopened else { return [] }
        let stats = try await restarted.stats()
        let report = restarted.recovery
        await restarted.close()
        guard stats == written else { return ["stats differ after reopen: \(stats) vs \(written)"] }

        for name in try PosixFileOperations().list(directory) where name.hasSuffix(".tsm") {
            try PosixFileOperations().remove(directory + "/" + name)
        }
        let scanning = try await clock.measure { reopened = try await Spool.open(directory: directory, options: SpoolOptions()) }
        let scanReport = reopened?.recovery
        await reopened?.close()
        let megabytes = written.bytesOnDisk / 1_000_000
        return [
            "spool: \(written.events) events, \(megabytes) MB in \(written.segments) segments (64 MiB each)",
            "reopen with summaries: \(milliseconds(withSummaries)) ms (\(report.segmentsFromSummary) segments from summaries, \(report.segmentsScanned) scanned)",
            "reopen scanning every segment (no summaries): \(milliseconds(scanning)) ms (\(scanReport?.segmentsScanned ?? 0) scanned)",
        ]
    }

    static func milliseconds(_ duration: Duration) -> Int64 {
        duration.components.seconds * 1_000 + duration.components.attoseconds / 1_000_000_000_000_000
    }

    static func event(_ index: Int) -> UsageEvent {
        UsageEvent(
            tenant: "tenant-\(index % 1_000)", metric: "api_calls", quantity: Quantity(1),
            timestamp: EventTime(microseconds: 1_776_081_600_000_000 + Int64(index) * 1_000),
            id: "req-\(index)", properties: Properties([("endpoint", "/api/v1/search"), ("region", "eu")]))
    }
}
