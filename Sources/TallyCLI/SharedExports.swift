// The agent's command tree lives in TallyAgentCommand and what every binary shares
// (CommandRunner, GlobalOptions, Observability, AcceptLoop) in TallyService, so that `tally-agent`
// links only what it needs; the other command trees build on them.
@_exported public import TallyAgentCommand
@_exported public import TallyService
