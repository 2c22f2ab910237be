public import ArgumentParser
import TallyCore
import TallyWorkload

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `tallyctl gen`: the reference workload as NDJSON on stdout, byte-for-byte the same for a seed,
/// and with `--expect FILE` the exact totals it should be billed for (format
/// `tally-expected-totals/1`, documented on `ExpectedTotals`).
public struct GenCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "gen",
        abstract: "Write the deterministic reference workload as NDJSON to stdout.",
        discussion: """
            1,000 tenants with Zipf traffic; metrics api_calls, bytes_out, compute_ms, exports; 1% client \
            retries, 0.1% late events (1-48 h behind), 0.01% invalid lines. The same flags give the same bytes.
            """)

    @Option(help: "The random seed; the same seed gives the same bytes.") var seed: UInt64 = 1
    @Option(parsing: .unconditional, help: "How many lines to write (retries and invalid lines included).")
    var events: Int = 100_000
    @Option(help: "The stream clock's first instant (RFC 3339).") var start: String = "2026-04-01T00:00:00Z"
    @Option(help: "Mean events per simulated second (1 to 1000000).") var rate: Int = 100
    @Option(help: "Also write the exact expected totals as JSON to this file.") var expect: String?

    public init() {}

    /// The workload the flags describe, or a usage error.
    func workloadConfiguration() throws -> WorkloadConfiguration {
        let startTime: EventTime
        do {
            startTime = try EventTime(parsing: start)
        } catch {
            throw ValidationError("--start: \(error)")
        }
        let configuration = WorkloadConfiguration(seed: seed, events: events, start: startTime, rate: rate)
        do {
            try configuration.validate()
        } catch {
            throw ValidationError(error.description)
        }
        return configuration
    }

    public func validate() throws {
        _ = try workloadConfiguration()
    }

    public func run() async throws {
        var workload = try ReferenceWorkload(workloadConfiguration())
        let chunk = 1 << 16
        var buffer: [UInt8] = []
        buffer.reserveCapacity(chunk + 4096)
        while workload.appendNextLine(to: &buffer) != nil {
            if buffer.count >= chunk {
                try writeStandardOutput(buffer[..<chunk])
                buffer.removeFirst(chunk)
            }
        }
        try writeStandardOutput(buffer[...])
        if let expect {
            do {
                try workload.expectedTotals.write(to: expect)
            } catch {
                throw RuntimeFailure(error.description)
            }
        }
    }
}

/// Writes all of `bytes` to file descriptor 1, retrying partial writes and interruptions.
func writeStandardOutput(_ bytes: ArraySlice<UInt8>) throws {
    try bytes.withUnsafeBytes { raw in
        var offset = 0
        while offset < raw.count {
            let written = write(1, raw.baseAddress.map { $0 + offset }, raw.count - offset)
            if written < 0 {
                if errno == EINTR { continue }
                throw RuntimeFailure("cannot write to standard output: \(String(cString: strerror(errno)))")
            }
            offset += written
        }
    }
}
