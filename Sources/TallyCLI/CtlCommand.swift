public import ArgumentParser

/// `tallyctl`: the operator's tool.
public struct CtlCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "tallyctl",
        abstract: "Operate Tally: spools, usage, invoices, audits, usage alerts, fingerprints and the reference workload.",
        version: tallyVersion,
        subcommands: [
            GenCommand.self, FingerprintCommand.self, SpoolCommand.self, UsageCommand.self, InvoiceCommand.self,
            AuditCommand.self, CompareCommand.self, AlertsCommand.self, TraceCommand.self, CorrectCommand.self, BackfillCommand.self,
        ]
    )

    public init() {}
}
