public import ArgumentParser
import TallyConfig

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Tally's version, printed by every binary's `--version`.
public let tallyVersion = "0.1.0"

/// A failure at run time, reported on stderr as one line; the process exits with code 1.
public struct RuntimeFailure: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Runs a command tree the way every Tally binary promises: `--help` and `--version` print and
/// exit 0; bad usage prints a one-line reason on stderr and exits 2; a runtime failure prints a
/// one-line reason and exits 1.
public enum CommandRunner {
    public static func main<Root: ParsableCommand>(_ root: Root.Type, arguments: [String]? = nil) async -> Never {
        let name = Root.configuration.commandName ?? "tally"
        var command: any ParsableCommand
        do {
            command = try Root.parseAsRoot(arguments)
        } catch {
            let code = Root.exitCode(for: error)
            if code == .success {
                print(Root.fullMessage(for: error))
                exit(0)
            }
            let message =
                Root.message(for: error)
                .split(separator: "\n").first.map(String.init) ?? "invalid usage"
            writeError("\(name): \(message) (see '\(name) --help')")
            exit(2)
        }
        do {
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
            exit(0)
        } catch let exitCode as ExitCode {
            exit(exitCode.rawValue)
        } catch let error as any ValidationErrorLike {
            writeError("\(name): \(error.description)")
            exit(2)
        } catch {
            let code = Root.exitCode(for: error)
            if code == .success {
                print(Root.fullMessage(for: error))
                exit(0)
            }
            if code == .validationFailure {
                writeError("\(name): \(Root.message(for: error)) (see '\(name) --help')")
                exit(2)
            }
            let message = "\(error)".split(separator: "\n").first.map(String.init) ?? "failed"
            writeError("\(name): \(message)")
            exit(1)
        }
    }

    public static func writeError(_ line: String) {
        var text = line
        if !text.hasSuffix("\n") { text += "\n" }
        let bytes = Array(text.utf8)
        _ = bytes.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    }
}

/// An error that means bad usage discovered while running (exit code 2).
public protocol ValidationErrorLike: Error, CustomStringConvertible {}

/// Flags every binary takes.
public struct GlobalOptions: ParsableArguments {
    @Option(help: "Log level: trace, debug, info, notice, warning, error or critical.")
    public var logLevel: LogLevelName = .info

    public init() {}
}

/// A log level as a command-line value.
public enum LogLevelName: String, ExpressibleByArgument, CaseIterable, Sendable {
    case trace, debug, info, notice, warning, error, critical
}

/// Refuses a flag that is not `HOST:PORT`, as bad usage.
package func checkAddress(_ text: String, _ option: String) throws {
    do {
        _ = try HostPort(parsing: text, option: option)
    } catch {
        throw ValidationError(error.description)
    }
}
