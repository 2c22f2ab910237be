import TallyAgentCLI

await CommandRunner.main(AgentCommand.self)
