public import ArgumentParser
import TallyCore

/// `tallyctl gen`: the reference workload as NDJSON on stdout.
public struct GenCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "gen", abstract: "Write the deterministic reference workload as NDJSON to stdout.")

    @Option(help: "The random seed; the same seed gives the same bytes.") var seed: UInt64 = 1
    @Option(help: "How many lines to write.") var events: Int = 100_000

    public init() {}

    public func run() async throws { throw RuntimeFailure("gen is being built") }
}
