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

/// `tallyctl usage`.
public struct UsageCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "usage", abstract: "Show a tenant's usage from the collector's API (not built yet).")
    @OptionGroup var global: GlobalOptions
    public init() {}
    public func run() async throws { throw RuntimeFailure("'usage' is not built yet (see issue 5)") }
}

/// `tallyctl invoice`.
public struct InvoiceCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "invoice", abstract: "Show a tenant's invoice for a period (not built yet).")
    @OptionGroup var global: GlobalOptions
    public init() {}
    public func run() async throws { throw RuntimeFailure("'invoice' is not built yet (see issue 5)") }
}

/// `tallyctl audit`.
public struct AuditCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "audit",
        abstract: "Recompute aggregates and invoices from the raw ledger and show any drift (not built yet).")
    @OptionGroup var global: GlobalOptions
    public init() {}
    public func run() async throws { throw RuntimeFailure("'audit' is not built yet (see issue 5)") }
}
