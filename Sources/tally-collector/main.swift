import TallyCLI

await CommandRunner.main(CollectorCommand.self)
