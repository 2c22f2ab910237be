import TallyAgentCommand
import TallyService

await CommandRunner.main(AgentCommand.self)
