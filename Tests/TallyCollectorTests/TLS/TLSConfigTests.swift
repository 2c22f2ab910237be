import ArgumentParser
import TallyAgent
import TallyCLI
import TallyConfig
import Testing

@testable import TallyCollector

@Suite("TLS settings in configs and flags")
struct TLSConfigTests {
    @Test func theCollectorReadsTLSForItsListenerAndHTTP() throws {
        let config = try CollectorConfig.load(
            yaml: """
                tls:
                  listen: {certificate: c.pem, private_key: k.pem, client_ca: ca.pem}
                  http: {certificate: h.pem, private_key: hk.pem}
                allow_plaintext_remote: true
                """)
        #expect(config.listenTLS == ServerTLSFiles(certificate: "c.pem", privateKey: "k.pem", clientCA: "ca.pem"))
        #expect(config.httpTLS == ServerTLSFiles(certificate: "h.pem", privateKey: "hk.pem"))
        #expect(config.allowPlaintextRemote)
        #expect(CollectorConfig().listenTLS == nil && !CollectorConfig().allowPlaintextRemote)
        #expect(throws: ConfigError.self) { try CollectorConfig.load(yaml: "tls:\n  listen: {certificate: c.pem}\n") }
        #expect(throws: ConfigError.self) { try CollectorConfig.load(yaml: "tls:\n  agents: {certificate: c.pem, private_key: k}\n") }
    }

    @Test func theAgentReadsTLSForItsCollectors() throws {
        let config = try AgentConfig.load(
            yaml: """
                tls: {ca: ca.pem, server_name: collector.internal, certificate: a.pem, private_key: a.key}
                """)
        #expect(config.tls == ClientTLSFiles(ca: "ca.pem", serverName: "collector.internal", certificate: "a.pem", privateKey: "a.key"))
        #expect(!config.allowPlaintextRemote)
        #expect(throws: ConfigError.self) { try AgentConfig.load(yaml: "tls: {ca: ca.pem, certificate: a.pem}\n") }
    }

    @Test func flagsSetTLS() throws {
        let collector = try CollectorCommand.Run.parse([
            "--tls-certificate", "c.pem", "--tls-private-key", "k.pem", "--tls-client-ca", "ca.pem", "--allow-plaintext-remote",
        ])
        let resolved = try collector.resolvedConfig()
        #expect(resolved.listenTLS?.clientCA == "ca.pem" && resolved.httpTLS?.certificate == "c.pem" && resolved.allowPlaintextRemote)
        #expect(throws: (any Error).self) { try CollectorCommand.Run.parse(["--tls-certificate", "c.pem"]) }

        let agent = try AgentCommand.Run.parse(["--tls-ca", "ca.pem", "--tls-server-name", "collector.internal"])
        let config = try agent.agentConfig()
        #expect(config.tls == ClientTLSFiles(ca: "ca.pem", serverName: "collector.internal"))
        #expect(throws: (any Error).self) { try AgentCommand.Run.parse(["--tls-certificate", "a.pem"]) }
    }
}
