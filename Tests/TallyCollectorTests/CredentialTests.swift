import ArgumentParser
import NIOCore
import TallyCLI
import TallyConfig
import Testing
@testable import TallyCollector

/// Credentials are refused when empty or short on every path, and compared exactly as sent.
@Suite struct CredentialTests {
    static let admin = "admin-key-0123456789"
    static let acme = "acme-key-0123456789ab"

    @Test(arguments: ["", "short", "fifteen-bytes!!", "has a space in it 0123", "nbsp\u{A0}inside-0123456789", "tab\tinside-0123456789"])
    func badKeysAreRefusedInFlags(_ key: String) {
        #expect(throws: (any Error).self) { _ = try CollectorCommand.Run.parse(["--admin-key", key]) }
        #expect(throws: (any Error).self) { _ = try CollectorCommand.Run.parse(["--agent-key", "edge-1=\(key)"]) }
    }

    @Test func goodKeysAreAcceptedInFlags() throws {
        let run = try CollectorCommand.Run.parse(["--admin-key", Self.admin, "--agent-key", "edge-1=\(Self.acme)"])
        let config = try run.resolvedConfig()
        #expect(config.adminKey == Self.admin)
        #expect(config.agents.map(\.secret) == [Self.acme])
    }

    @Test func badKeysAreRefusedInTheConfigFileWithTheirLine() {
        for (yaml, place) in [
            ("admin_key: too-short\n", "admin_key"),
            ("admin_key: \"\"\n", "admin_key"),
            ("agents:\n  - id: edge-1\n    secret: abc\n", "agents[0].secret"),
            ("api_keys:\n  - key: \" padded-key-0123456789 \"\n    tenant: acme\n", "api_keys[0].key"),
        ] {
            let error = #expect(throws: ConfigError.self) { _ = try CollectorConfig.load(yaml: yaml, file: "c.yaml") }
            #expect(error?.description.contains(place) == true, "\(yaml): \(String(describing: error))")
            // The secret itself is never echoed.
            #expect(error?.description.contains("abc") != true)
        }
    }

    @Test func badKeysAreRefusedHoweverTheConfigWasBuilt() {
        var config = CollectorConfig()
        config.adminKey = ""
        #expect(throws: ConfigError.self) { try config.validate() }
        config.adminKey = Self.admin
        config.tenantKeys = ["x": "acme"]
        #expect(throws: ConfigError.self) { try config.validate() }
        config.tenantKeys = [Self.admin: "acme"]
        #expect(throws: ConfigError.self) { try config.validate() }
        config.tenantKeys = [Self.acme: "acme"]
        config.agents = [.init(id: "edge-1", secret: "")]
        #expect(throws: ConfigError.self) { try config.validate() }
        config.agents = [.init(id: "edge-1", secret: Self.acme + "-agent")]
        #expect(throws: Never.self) { try config.validate() }
    }

    /// `Bearer` followed by a non-breaking space was trimmed to an empty key that matched an
    /// empty admin key, from any address.
    @Test func whitespaceIsNeverTrimmedIntoAMatch() throws {
        let remote = try SocketAddress(ipAddress: "203.0.113.7", port: 40_000)
        let access = APIAccess(adminKey: Self.admin, tenantKeys: [Self.acme: "acme"])
        #expect(try access.grant(authorization: "Bearer \(Self.admin)", remote: remote) == .everything)
        #expect(try access.grant(authorization: "Bearer \(Self.acme)", remote: remote) == .tenant("acme"))
        for header in [
            "Bearer \u{A0}", "Bearer ", "Bearer \u{A0}\(Self.admin)", "Bearer \(Self.admin)\u{A0}", "Bearer \(Self.admin) ",
            "Bearer  \(Self.admin)", "Bearer \(Self.admin.dropLast())", "Bearer \(Self.admin)x",
        ] {
            #expect(throws: APIError.self, "\(header.debugDescription)") { try access.grant(authorization: header, remote: remote) }
        }
        // Even a store of keys built around the config rules never matches an empty key.
        let empty = APIAccess(adminKey: "", tenantKeys: ["": "acme"])
        #expect(throws: APIError.self) { try empty.grant(authorization: "Bearer \u{A0}", remote: remote) }
        #expect(throws: APIError.self) { try empty.grant(authorization: "Bearer ", remote: remote) }
    }

    @Test func keysCompareByValueWhateverTheirLengths() {
        #expect(APIAccess.constantTimeEqual(Self.admin, Self.admin))
        #expect(!APIAccess.constantTimeEqual(Self.admin, Self.admin + "x"))
        #expect(!APIAccess.constantTimeEqual(Self.admin, String(Self.admin.dropLast())))
        #expect(!APIAccess.constantTimeEqual("", Self.admin))
        #expect(!APIAccess.constantTimeEqual("a", "ab"))
    }
}
