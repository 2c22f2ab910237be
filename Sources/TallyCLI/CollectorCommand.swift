public import ArgumentParser
import TallyConfig

/// `tally-collector`: receives batches from agents, keeps the ledger, prices usage.
public struct CollectorCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "tally-collector",
        abstract: "Receive usage batches from agents, keep the audit ledger, aggregate and price usage.",
        discussion: """
            With no flags it stores into sqlite:./tally-data/ledger.db, takes agents on 127.0.0.1:7400 \
            and serves HTTP on 127.0.0.1:7480.
            """,
        version: tallyVersion,
        subcommands: [Run.self],
        defaultSubcommand: Run.self
    )

    public init() {}

    /// Runs the collector (the default subcommand).
    public struct Run: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(abstract: "Run the collector (the default).")

        @OptionGroup public var global: GlobalOptions
        @Option(help: "A YAML config file.") public var config: String?
        @Option(help: "The store: sqlite:PATH or a postgres:// URL.") public var store: String = "sqlite:./tally-data/ledger.db"
        @Option(help: "Agent protocol address, HOST:PORT.") public var listen: String = "127.0.0.1:7400"
        @Option(help: "HTTP API address, HOST:PORT.") public var http: String = "127.0.0.1:7480"
        @Option(help: "The pricing YAML file.") public var pricing: String?
        @Option(help: "An agent's key, ID=SECRET (repeatable).") public var agentKey: [String] = []
        @Option(help: "The admin API key.") public var adminKey: String?

        public init() {}

        public func validate() throws {
            try checkAddress(listen, "--listen")
            try checkAddress(http, "--http")
            guard store.hasPrefix("sqlite:") || store.hasPrefix("postgres://") || store.hasPrefix("postgresql://") else {
                throw ValidationError("--store '\(store)' must be sqlite:PATH or a postgres:// URL")
            }
            for entry in agentKey {
                let parts = entry.split(separator: "=", maxSplits: 1)
                guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
                    throw ValidationError("--agent-key '\(entry)' must be ID=SECRET")
                }
            }
        }

        public func run() async throws {
            throw RuntimeFailure("the collector service is not built yet (see issue 3); only --help and --version work")
        }
    }
}
