public import ArgumentParser

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
            _ = try HostPort(parsing: listen, option: "--listen")
            for address in collector { _ = try HostPort(parsing: address, option: "--collector") }
        }

        public func run() async throws {
            throw RuntimeFailure("the agent service is not built yet (see issue 4); only --help and --version work")
        }
    }
}

/// A `HOST:PORT` address from a flag.
public struct HostPort: Sendable, Hashable, CustomStringConvertible {
    public let host: String
    public let port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    public init(parsing text: String, option: String) throws {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
            (0...65535).contains(port)
        else { throw ValidationError("\(option) '\(text)' must be HOST:PORT with a port from 0 to 65535") }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { throw ValidationError("\(option) '\(text)' has no host") }
        self.init(host: host, port: port)
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}
