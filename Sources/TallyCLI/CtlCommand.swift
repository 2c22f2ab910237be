public import ArgumentParser

/// `tallyctl`: the operator's tool.
public struct CtlCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "tallyctl",
        abstract: "Operate Tally: spools, usage, invoices, audits, fingerprints and the reference workload.",
        version: tallyVersion,
        subcommands: [
            GenCommand.self, FingerprintCommand.self, SpoolCommand.self, UsageCommand.self, InvoiceCommand.self,
            AuditCommand.self,
        ]
    )

    public init() {}
}

/// `tallyctl spool ...`: look after an agent's spool.
public struct SpoolCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "spool",
        abstract: "See, verify, drain and export an agent's spool.",
        subcommands: [
            NotYet.named("status", "Show the backlog: events, bytes, segments, age of the oldest event."),
            NotYet.named("inspect", "Print spooled events as JSON lines, with filters."),
            NotYet.named("verify", "Check every record's CRC and report corrupt records."),
            NotYet.named("drain", "Ship the spool to a collector while the agent is stopped."),
            NotYet.named("export", "Write the spool as JSON lines."),
        ]
    )
    public init() {}
}

/// Subcommands whose work arrives in a later issue: listed in `--help`, failing clearly if run.
enum NotYet {
    static func named(_ name: String, _ abstract: String) -> any ParsableCommand.Type {
        switch name {
        case "status": SpoolStatus.self
        case "inspect": SpoolInspect.self
        case "verify": SpoolVerify.self
        case "drain": SpoolDrain.self
        default: SpoolExport.self
        }
    }
}

struct SpoolStatus: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "Show the backlog: events, bytes, segments, age of the oldest event.")
    @Option(help: "The spool directory.") var spool = "./tally-spool"
    func run() async throws { throw RuntimeFailure("'spool status' is not built yet (see issue 4)") }
}
struct SpoolInspect: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "inspect", abstract: "Print spooled events as JSON lines, with filters.")
    @Option(help: "The spool directory.") var spool = "./tally-spool"
    func run() async throws { throw RuntimeFailure("'spool inspect' is not built yet (see issue 4)") }
}
struct SpoolVerify: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "verify", abstract: "Check every record's CRC and report corrupt records.")
    @Option(help: "The spool directory.") var spool = "./tally-spool"
    func run() async throws { throw RuntimeFailure("'spool verify' is not built yet (see issue 4)") }
}
struct SpoolDrain: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "drain", abstract: "Ship the spool to a collector while the agent is stopped.")
    @Option(help: "The spool directory.") var spool = "./tally-spool"
    func run() async throws { throw RuntimeFailure("'spool drain' is not built yet (see issue 4)") }
}
struct SpoolExport: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "export", abstract: "Write the spool as JSON lines.")
    @Option(help: "The spool directory.") var spool = "./tally-spool"
    func run() async throws { throw RuntimeFailure("'spool export' is not built yet (see issue 4)") }
}
