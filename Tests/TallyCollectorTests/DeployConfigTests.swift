import ArgumentParser
import Foundation
import TallyAgent
import TallyCLI
import TallyConfig
import TallyPricing
import Testing

@testable import TallyCollector

/// What deploy/ hands the binaries is read by the binaries' own readers, as a pod or a service
/// will read it: the configs in the Kubernetes ConfigMaps, and the command lines of the systemd
/// units, the Kubernetes containers and the Dockerfile. A misspelt key or flag, a bad duration
/// or a pricing plan that does not load fails here, not at a platform engineer's first rollout.
/// (The files themselves are checked by their tools in scripts/check-deploy.sh.)
@Suite struct DeployConfigTests {
    static let deploy = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("deploy")
    static let kubernetes = deploy.appendingPathComponent("kubernetes")

    /// A ConfigMap's file: the manifest it is in, the ConfigMap's name and the key.
    struct EmbeddedFile: CustomStringConvertible {
        let manifest: String
        let configMap: String
        let key: String
        let text: String
        var description: String { "\(manifest): ConfigMap \(configMap), \(key)" }
    }

    /// Every document of every manifest under deploy/kubernetes/, with the manifest's path.
    static func manifestDocuments() throws -> [(manifest: String, root: YAMLNode)] {
        var found: [(String, YAMLNode)] = []
        let manifests = FileManager.default.enumerator(atPath: kubernetes.path)?.compactMap { $0 as? String }.filter { $0.hasSuffix(".yaml") }
        for manifest in (manifests ?? []).sorted() {
            let text = try String(contentsOf: kubernetes.appendingPathComponent(manifest), encoding: .utf8)
            // Tally's manifests separate their documents with a line holding only `---`.
            var documents: [String] = [""]
            for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
                if line == "---" { documents.append("") } else { documents[documents.count - 1] += line + "\n" }
            }
            for document in documents {
                if let root = try YAMLNode.compose(document) { found.append((manifest, root)) }
            }
        }
        return found
    }

    /// Every data entry of every ConfigMap under deploy/kubernetes/.
    static func embeddedFiles() throws -> [EmbeddedFile] {
        try manifestDocuments().filter { $0.root["kind"]?.text == "ConfigMap" }.flatMap { manifest, root in
            (root["data"]?.mapping ?? []).map { key, value in
                EmbeddedFile(
                    manifest: manifest, configMap: root["metadata"]?["name"]?.text ?? "?", key: key.text ?? "?", text: value.text ?? "")
            }
        }
    }

    @Test func everyConfigMapFileLoadsWithTheReaderOfItsBinary() throws {
        let files = try Self.embeddedFiles()
        var read: [String: Int] = [:]
        for file in files {
            do {
                switch file.key {
                case "collector.yaml":
                    let config = try CollectorConfig.load(yaml: file.text, file: file.description)
                    try config.validate()
                    // TLS on both listeners: agents and readers are on other hosts.
                    #expect(config.listenTLS != nil && config.httpTLS != nil, "\(file)")
                    #expect(!config.allowPlaintextRemote, "\(file)")
                    // The pricing file it names is the ConfigMap's own, where the pod mounts it.
                    #expect(config.pricingFile == "/etc/tally/config/pricing.yaml", "\(file)")
                case "agent.yaml":
                    let config = try AgentConfig.load(yaml: file.text, file: file.description)
                    try config.validate()
                    #expect(config.tls?.ca != nil, "\(file): collectors on other hosts need TLS")
                    #expect(config.spoolDirectory.hasPrefix("/var/lib/tally/"), "\(file): the spool must be on the pod's volume")
                case "pricing.yaml":
                    let pricing = try PricingConfigLoader.load(yaml: file.text, file: file.description)
                    #expect(!pricing.plans.isEmpty, "\(file)")
                default:
                    Issue.record("\(file): no reader is known for this file; teach DeployConfigTests to check it")
                }
                read[file.key, default: 0] += 1
            } catch {
                Issue.record("\(file): \(error)")
            }
        }
        // Both collector variants and the example API's agent.
        #expect(read["collector.yaml"] == 2, "\(read)")
        #expect(read["pricing.yaml"] == 2, "\(read)")
        #expect(read["agent.yaml"] == 1, "\(read)")
    }

    /// A secret long enough for the collector's rules, for `$(NAME)` and the agent's key file.
    static let secret = "deploy-test-secret-0123456789abcdef"
    /// The store URL of the PostgreSQL variant's Secret, as its manifest's header shows it.
    static let storeURL = "postgres://tally@db.internal:5432/tally?sslmode=verify-full&pool_size=8"

    /// How a binary is started by deploy/: where, and its arguments after the executable.
    struct CommandLine: CustomStringConvertible {
        let place: String
        let binary: String
        let arguments: [String]
        var description: String { "\(place): \(binary) \(arguments.joined(separator: " "))" }
    }

    /// The systemd units' ExecStart lines, with the specifiers systemd fills in (%d the
    /// credentials directory, %S /var/lib).
    static func unitCommandLines() throws -> [CommandLine] {
        try ["tally-agent", "tally-collector"].map { name in
            let file = deploy.appendingPathComponent("systemd/\(name).service")
            let text = try String(contentsOf: file, encoding: .utf8)
            let line = try #require(text.split(separator: "\n").first { $0.hasPrefix("ExecStart=") }, "\(file.path) has no ExecStart")
            let words = line.dropFirst("ExecStart=".count).split(separator: " ").map {
                $0.replacingOccurrences(of: "%d", with: "/run/credentials/\(name).service").replacingOccurrences(of: "%S", with: "/var/lib")
            }
            return CommandLine(place: "deploy/systemd/\(name).service", binary: words[0], arguments: Array(words.dropFirst()))
        }
    }

    /// The Tally containers' command lines in the Kubernetes manifests: `$(NAME)` references
    /// filled in as the kubelet does, and the agent sidecar's shell line read as the shell would
    /// (the pod's name for $POD_NAME, the key file's contents for the `$(cat ...)`).
    static func containerCommandLines() throws -> [CommandLine] {
        var lines: [CommandLine] = []
        for (manifest, root) in try manifestDocuments() {
            let pod = root["spec"]?["template"]?["spec"]
            let containers = (pod?["containers"]?.sequence ?? []) + (pod?["initContainers"]?.sequence ?? [])
            for container in containers where container["image"]?.text?.contains("/tally:") == true {
                let place = "deploy/kubernetes/\(manifest): \(root["metadata"]?["name"]?.text ?? "?")/\(container["name"]?.text ?? "?")"
                var words = ((container["command"]?.sequence ?? []) + (container["args"]?.sequence ?? [])).compactMap(\.text)
                if words.prefix(2) == ["/bin/sh", "-c"], let script = words.last {
                    let filled = script.replacingOccurrences(
                        of: #""$(cat "/etc/tally/agent-keys/$POD_NAME")""#, with: secret
                    ).replacingOccurrences(of: #""$POD_NAME""#, with: "example-api-0")
                    words = filled.split(whereSeparator: { $0 == " " || $0 == "\n" }).map(String.init)
                    #expect(words.first == "exec", "\(place): the shell should exec the agent, so that it gets SIGTERM")
                    words = Array(words.dropFirst())
                }
                let arguments = words.dropFirst().map {
                    $0.replacing(#/\$\(([A-Z_0-9]+)\)/#, with: { reference in reference.1 == "TALLY_STORE_URL" ? storeURL : secret })
                }
                lines.append(CommandLine(place: place, binary: words.first ?? "", arguments: arguments))
            }
        }
        return lines
    }

    /// The Dockerfile's CMD (an exec-form JSON array).
    static func dockerfileCommandLine() throws -> CommandLine {
        let text = try String(contentsOf: deploy.appendingPathComponent("Dockerfile"), encoding: .utf8)
        let line = try #require(text.split(separator: "\n").last { $0.hasPrefix("CMD ") }, "deploy/Dockerfile has no CMD")
        let words = try #require(try JSONSerialization.jsonObject(with: Data(line.dropFirst(4).utf8)) as? [String])
        return CommandLine(place: "deploy/Dockerfile CMD", binary: words.first ?? "", arguments: Array(words.dropFirst()))
    }

    @Test func everyCommandLineParsesAsItsBinaryParsesIt() throws {
        let lines = try Self.unitCommandLines() + Self.containerCommandLines() + [Self.dockerfileCommandLine()]
        var binaries: [String: Int] = [:]
        for line in lines {
            let binary = String(line.binary.split(separator: "/").last ?? "")
            do {
                switch binary {
                case "tally-collector":
                    let command = try CollectorCommand.parseAsRoot(line.arguments)
                    #expect(command is CollectorCommand.Run, "\(line)")
                case "tally-agent":
                    let command = try AgentCommand.parseAsRoot(line.arguments)
                    #expect(command is AgentCommand.Run, "\(line)")
                default:
                    Issue.record("\(line): not a Tally binary")
                }
                binaries[binary, default: 0] += 1
            } catch {
                Issue.record("\(line): \(CollectorCommand.message(for: error))")
            }
        }
        // Two units, three containers (two collector variants and the sidecar), one CMD.
        #expect(binaries == ["tally-collector": 4, "tally-agent": 2], "\(lines)")
        // The parser refuses what a typo makes of a flag, so the loop above can fail.
        #expect(throws: (any Error).self) { try AgentCommand.parseAsRoot(["--config", "a.yaml", "--spol", "/var/lib/spool"]) }
    }

    @Test func aBrokenConfigIsCaught() throws {
        // The same readers refuse what a typo makes of a config, so the test above can fail.
        #expect(throws: ConfigError.self) { try CollectorConfig.load(yaml: "listen: 0.0.0.0:7400\nhtpp: 0.0.0.0:7480\n") }
        #expect(throws: ConfigError.self) { try AgentConfig.load(yaml: "spool:\n  fsync: sometimes\n") }
    }
}

extension YAMLNode {
    /// The value of `key` in a mapping.
    fileprivate subscript(key: String) -> YAMLNode? { mapping?.first { $0.key.scalar?.string == key }?.value }
    /// A scalar's text.
    fileprivate var text: String? { scalar?.string }
}
