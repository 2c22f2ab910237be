// The agent's command tree and the parts every binary shares (CommandRunner, GlobalOptions,
// Observability) live in TallyAgentCLI, so that `tally-agent` links only what it needs; the other
// command trees build on them.
@_exported public import TallyAgentCLI
