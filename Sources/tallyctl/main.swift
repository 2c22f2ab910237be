import TallyCLI

await CommandRunner.main(CtlCommand.self)
