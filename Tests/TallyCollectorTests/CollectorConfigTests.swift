import Foundation
import TallyCore
import Testing
import TallyConfig
@testable import TallyCollector

@Suite struct CollectorConfigTests {
    @Test func defaultsAreTheBriefs() {
        let config = CollectorConfig()
        #expect(config.store == "sqlite:./tally-data/ledger.db")
        #expect(config.listen.description == "127.0.0.1:7400")
        #expect(config.http.description == "127.0.0.1:7480")
        #expect(config.lateWindow.grace == .seconds(72 * 3600))
        #expect(config.lateWindow.policy == .adjust)
        #expect(config.lateWindow.lateArrivalLimit == .seconds(35 * 86_400))
    }

    /// The limits a collector announces by default are SPEC §7's (16 MiB frames): what the
    /// welcome vector carries and an independent agent is told to expect.
    @Test func defaultLimitsAreTheProtocols() throws {
        let limits = CollectorConfig().limits
        #expect(limits.maxFrameBytes == 16 << 20)
        #expect(limits.maxDecompressedBytes == 64 << 20)
        #expect(limits.maxEventsPerBatch == 10_000)
        #expect(limits.maxBatchesInFlight == 8)
    }

    @Test func readsEveryKey() throws {
        let config = try CollectorConfig.load(
            yaml: """
                store: sqlite:/var/lib/tally/ledger.db
                listen: 0.0.0.0:7401
                http: "[::1]:7481"
                pricing: /etc/tally/pricing.yaml
                admin_key: adm1n-0123456789ab
                agents:
                  - id: edge-1
                    secret: s3cret-0123456789ab
                    tenants: [acme, globex]
                  - id: edge-2
                    secret: other-0123456789abcd
                api_keys:
                  - key: acme-key-0123456789
                    tenant: acme
                late:
                  grace: 48h
                  policy: reject
                  max_age: 40d
                dedupe_horizon: 45d
                events:
                  max_future_skew: 10m
                limits:
                  max_events_per_batch: 5000
                """)
        #expect(config.listen.port == 7401)
        #expect(config.http.host == "::1")
        #expect(config.agents.count == 2)
        #expect(config.agents[0].tenants == ["acme", "globex"])
        #expect(config.agents[1].tenants == nil)
        #expect(config.tenantKeys["acme-key-0123456789"] == "acme")
        #expect(config.lateWindow.policy == .reject)
        #expect(config.lateWindow.grace == .seconds(48 * 3600))
        #expect(config.lateWindow.lateArrivalLimit == .seconds(40 * 86_400))
        #expect(config.eventLimits.maxFutureSkew == .seconds(600))
        #expect(config.limits.maxEventsPerBatch == 5000)
        try config.validate()
    }

    @Test func errorsNameTheFileLineAndPlace() {
        do {
            _ = try CollectorConfig.load(yaml: "listen: nowhere\nlate:\n  policy: forget\n  grace: soon\ncolour: red\n", file: "c.yaml")
            Issue.record("expected an error")
        } catch {
            let text = error.description
            #expect(text.contains("c.yaml:1:9: listen:"))
            #expect(text.contains("late.policy: 'forget' must be adjust or reject"))
            #expect(text.contains("late.grace: 'soon' is not a duration"))
            #expect(text.contains("colour: unknown key"))
            #expect(error.issues.count == 4)
        }
    }

    @Test func aDedupeHorizonShorterThanTheLateLimitIsRefused() throws {
        let config = try CollectorConfig.load(yaml: "dedupe_horizon: 24h\n")
        #expect(throws: ConfigError.self) { try config.validate() }
    }

    @Test func keepaliveTimersAreReadAndChecked() throws {
        let config = try CollectorConfig.load(yaml: "limits:\n  ping_after: 10s\n  idle_timeout: 45s\n")
        #expect(config.limits.pingAfter == .seconds(10))
        #expect(config.limits.idleTimeout == .seconds(45))
        try config.validate()
        #expect(CollectorConfig().limits.pingAfter == .seconds(30) && CollectorConfig().limits.idleTimeout == .seconds(90))
        let backwards = try CollectorConfig.load(yaml: "limits:\n  ping_after: 60s\n  idle_timeout: 30s\n")
        let error = #expect(throws: ConfigError.self) { try backwards.validate() }
        #expect(error?.description.contains("limits.idle_timeout") == true)
    }

    @Test func theDocumentedExampleLoadsWithTheDefaults() throws {
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("deploy/collector.example.yaml").path
        let config = try CollectorConfig.load(file: path)
        try config.validate()
        let defaults = CollectorConfig()
        #expect(config.limits == defaults.limits)
        #expect(config.lateWindow == defaults.lateWindow && config.dedupeHorizon == defaults.dedupeHorizon)
        #expect(config.eventLimits == defaults.eventLimits)
        #expect(config.listen == defaults.listen && config.http == defaults.http && config.store == defaults.store)
        #expect(config.agents.first?.tenants == ["acme", "globex"] && config.tenantKeys["change-me-acme-api-key"] == "acme")
        #expect(config.listenTLS?.clientCA != nil && config.httpTLS?.certificate == config.listenTLS?.certificate)
        #expect(config.allowPlaintextRemote == defaults.allowPlaintextRemote)
        #expect(config.realtimePriority == defaults.realtimePriority)
        #expect(config.exports?.apiKey == .environment("STRIPE_API_KEY") && config.exports?.every == .seconds(3_600))
        #expect(config.exports?.maxAttempts == ExportsConfig(baseURL: "x").maxAttempts)
        let alerts = try #require(config.alerts)
        let defaultAlerts = AlertsConfig(webhookURL: "x", secret: .environment("x"))
        #expect(alerts.secret == .environment("TALLY_ALERT_SECRET") && alerts.every == defaultAlerts.every)
        #expect(alerts.initialBackoff == defaultAlerts.initialBackoff && alerts.maxBackoff == defaultAlerts.maxBackoff)
        #expect(alerts.requestTimeout == defaultAlerts.requestTimeout)
    }

    /// `realtime_priority` is 1 unless set; 0 turns it off; beyond SCHED_RR's range it is an
    /// error that names the key.
    @Test func theRealtimePriorityIsReadAndBounded() throws {
        #expect(try CollectorConfig.load(yaml: "store: sqlite:./l.db\n").realtimePriority == 1)
        #expect(try CollectorConfig.load(yaml: "realtime_priority: 0\n").realtimePriority == 0)
        #expect(try CollectorConfig.load(yaml: "realtime_priority: 20\n").realtimePriority == 20)
        for bad in ["100", "-1", "high"] {
            let error = #expect(throws: ConfigError.self) { try CollectorConfig.load(yaml: "realtime_priority: \(bad)\n") }
            #expect(error?.description.contains("realtime_priority") == true, "\(bad): \(String(describing: error))")
        }
    }

    @Test func theAlertsSectionIsReadAndItsSecretResolved() throws {
        let config = try CollectorConfig.load(
            yaml: """
                pricing: p.yaml
                alerts:
                  webhook_url: http://127.0.0.1:9999/hooks
                  secret_env: HOOK_SECRET
                  every: 30s
                  max_backoff: 5m
                """)
        try config.validate()
        let alerts = try #require(config.alerts)
        #expect(alerts.webhookURL == "http://127.0.0.1:9999/hooks" && alerts.every == .seconds(30) && alerts.maxBackoff == .seconds(300))
        #expect(try alerts.resolveSecret(environment: ["HOOK_SECRET": "s3"]) == Array("s3".utf8))
        let missing = #expect(throws: ConfigError.self) { try alerts.resolveSecret(environment: [:]) }
        #expect(missing?.description.contains("HOOK_SECRET is not set") == true)
        var unpriced = config
        unpriced.pricingFile = nil
        let error = #expect(throws: ConfigError.self) { try unpriced.validate() }
        #expect(error?.description.contains("alerts") == true)
        let both = #expect(throws: ConfigError.self) {
            try CollectorConfig.load(yaml: "alerts:\n  webhook_url: https://x\n  secret_env: A\n  secret_file: /b\n")
        }
        #expect(both?.description.contains("give secret_env or secret_file, not both") == true)
    }

    @Test func theExportsSectionIsReadAndChecked() throws {
        let config = try CollectorConfig.load(
            yaml: """
                pricing: p.yaml
                exports:
                  base_url: http://127.0.0.1:9999/
                  api_key_file: /run/key
                  every: 15m
                  meters: {api_calls: api_requests}
                  customers: {acme: cus_1}
                  max_attempts: 3
                  request_timeout: 2s
                """)
        try config.validate()
        let exports = try #require(config.exports)
        #expect(exports.baseURL == "http://127.0.0.1:9999")
        #expect(exports.apiKey == .file("/run/key") && exports.every == .seconds(900))
        #expect(exports.meters == ["api_calls": "api_requests"] && exports.customers == ["acme": "cus_1"])
        #expect(exports.maxAttempts == 3 && exports.requestTimeout == .seconds(2))
        let settings = exports.settings(apiKey: "k")
        #expect(settings.meters == exports.meters && settings.apiKey == "k" && settings.maxAttempts == 3)

        for bad in [
            "exports: {api_key_env: K}", "exports: {base_url: ftp://x}", "exports: {base_url: https://x, api_key_env: A, api_key_file: B}",
            "exports: {base_url: https://x, every: 0s}", "exports: {base_url: https://x, meters: [a]}", "exports: {base_url: https://x, colour: red}",
        ] {
            #expect(throws: ConfigError.self) { try CollectorConfig.load(yaml: bad) }
        }
        let noPricing = try CollectorConfig.load(yaml: "exports: {base_url: https://x}")
        let error = #expect(throws: ConfigError.self) { try noPricing.validate() }
        #expect(error?.description.contains("pricing") == true)
    }

    @Test func theExportKeyIsReadFromTheEnvironmentOrAFile() throws {
        var exports = ExportsConfig(baseURL: "https://x")
        #expect(try exports.resolveAPIKey(environment: [:]) == nil)
        exports.apiKey = .environment("TALLY_TEST_KEY")
        #expect(try exports.resolveAPIKey(environment: ["TALLY_TEST_KEY": "sk_test_1"]) == "sk_test_1")
        #expect(throws: ConfigError.self) { try exports.resolveAPIKey(environment: [:]) }
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("tally-key-\(UUID().uuidString)")
        try "sk_file_2\n".write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        exports.apiKey = .file(file.path)
        #expect(try exports.resolveAPIKey(environment: [:]) == "sk_file_2")
        exports.apiKey = .file(file.path + ".missing")
        #expect(throws: ConfigError.self) { try exports.resolveAPIKey(environment: [:]) }
    }
}
