import TallyCLI

await CommandRunner.main(AgentCommand.self)
