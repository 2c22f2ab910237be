public import ArgumentParser
import TallyConfig

/// `tally-agent`: the sidecar that takes usage events on localhost, spools them durably and
/// ships them to a collector.
public struct AgentCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "tally-agent",
        abstract: "Take usage events on localhost, spool them durably, ship them to a Tally collector.",
        discussion: """
            With no flags it listens on 127.0.0.1:7380 (HTTP), spools under ./tally-spool and ships \
            to 127.0.0.1:7400.
            """,
        version: tallyVersion,
        subcommands: [Run.self],
        defaultSubcommand: Run.self
    )

    public init() {}

    /// Runs the agent (the default subcommand).
    public struct Run: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(abstract: "Run the agent (the default).")

        @OptionGroup public var global: GlobalOptions
        @Option(help: "A YAML config file.") public var config: String?
        @Option(help: "The spool directory.") public var spool: String = "./tally-spool"
        @Option(help: "HTTP ingest address, HOST:PORT.") public var listen: String = "127.0.0.1:7380"
        @Option(help: "A Unix socket for NDJSON streams.") public var socket: String?
        @Option(help: "A collector, HOST:PORT (repeatable; the first is preferred).") public var collector: [String] = []
        @Option(help: "This agent's id.") public var agentId: String?
        @Option(help: "This agent's secret key.") public var key: String?
        @Option(help: "The metric of events that name none.") public var defaultMetric: String?

        public init() {}

        public func validate() throws {
            try checkAddress(listen, "--listen")
            for address in collector { try checkAddress(address, "--collector") }
        }

        public func run() async throws {
            throw RuntimeFailure("the agent service is not built yet (see issue 4); only --help and --version work")
        }
    }
}

