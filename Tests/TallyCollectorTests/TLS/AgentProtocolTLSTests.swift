import Foundation
import Logging
import NIOCore
import TallyAgent
import TallyConfig
import TallyCore
import TallyLedger
import TallySpool
import TallyTLS
import TallyWire
import Testing

@testable import TallyCollector

let tlsTestLogger: Logger = {
    var logger = Logger(label: "tally-tls-test")
    logger.logLevel = .critical
    return logger
}()

/// Waits (polling, with a deadline) until `condition` holds; returns whether it did.
func eventuallyTrue(_ timeout: Duration = .seconds(60), _ condition: () async throws -> Bool) async rethrows -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try? await Task.sleep(for: .milliseconds(10))
    }
    return try await condition()
}

func tlsTemporaryDirectory() throws -> String {
    let path = NSTemporaryDirectory() + "tally-tls-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// A real protocol server (TLS or not) on an ephemeral loopback port, over a fresh SQLite ledger.
struct ProtocolCollector {
    let server: ProtocolServer
    let ledger: Ledger
    let serving: Task<Void, any Error>
    var port: Int { server.localAddress?.port ?? 0 }
    var endpoint: HostPort { HostPort(host: "127.0.0.1", port: port) }

    static func start(tls: ServerTLS?, keys: [String: AgentKey] = [:]) async throws -> ProtocolCollector {
        let ledger = Ledger(store: try SQLiteLedgerStore(path: try tlsTemporaryDirectory() + "/ledger.db"))
        let server = try await ProtocolServer.bind(
            host: "127.0.0.1", port: 0,
            settings: .init(keyring: AgentKeyring(keys: keys), limits: .standard, eventLimits: .standard, tls: tls),
            ledger: ledger, metrics: CollectorMetrics(), logger: tlsTestLogger)
        return ProtocolCollector(server: server, ledger: ledger, serving: Task { try await server.run() })
    }

    /// Events the ledger received, whatever became of them.
    func eventsReceived() async throws -> Int64 {
        try await ledger.read { store throws(LedgerError) in try store.reconciliation(ReconciliationFilter()).total.received }
    }

    func stop() async {
        serving.cancel()
        _ = await serving.result
        await ledger.shutdown()
    }
}

/// A spool of `count` events and a shipper for it to `collector`, run until `body` returns.
func withTLSShipper(
    events count: Int, to collector: HostPort, agentId: String = "tls-agent", key: String? = nil, tls: ClientTLSFiles?,
    _ body: (Spool, Shipper) async throws -> Void
) async throws {
    let spool = try await Spool.open(directory: try tlsTemporaryDirectory())
    let time = EventTime(seconds: EventTime.now().seconds - 60)
    try await spool.append(
        (0..<count).map {
            UsageEvent(tenant: "acme", metric: "api_calls", quantity: Quantity(1), timestamp: time, id: "tls-\($0)", properties: Properties([]))
        })
    var settings = Shipper.Settings(collectors: [collector], agentId: agentId, key: key)
    settings.tls = try tls.map { files throws(TLSSetupError) in try ClientTLS(files, place: "tls") }
    settings.batching.linger = .milliseconds(5)
    settings.reconnect.initial = .milliseconds(5)
    settings.reconnect.maximum = .milliseconds(50)
    settings.reconnect.afterFatalError = .milliseconds(50)
    // Long: these tests check why a handshake failed (a certificate, a key), and a timeout on a
    // loaded machine would be the wrong reason. No test here is about the timeout.
    settings.handshakeTimeout = .seconds(300)
    let shipper = Shipper(spool: spool, settings: settings, metrics: AgentMetrics(), logger: tlsTestLogger)
    let task = Task { try await shipper.run() }
    do {
        try await body(spool, shipper)
    } catch {
        shipper.stop()
        _ = await task.result
        await spool.close()
        throw error
    }
    shipper.stop()
    _ = await task.result
    await spool.close()
}

@Suite("TLS on the agent protocol")
struct AgentProtocolTLSTests {
    let pki: TestPKI

    init() throws { pki = try TestPKI.shared.get() }

    @Test func anAgentShipsThroughAGoodCertificate() async throws {
        let collector = try await ProtocolCollector.start(tls: try ServerTLS(pki.serverFiles(TestPKI.good), place: "tls.listen"))
        // By IP (checked against the IP address name) and by host name (SNI and DNS name).
        for host in ["127.0.0.1", "localhost"] {
            let before = try await collector.eventsReceived()
            try await withTLSShipper(
                events: 25, to: HostPort(host: host, port: collector.port), agentId: "agent-\(host)", tls: ClientTLSFiles(ca: pki.ca)
            ) { spool, shipper in
                #expect(await eventuallyTrue { shipper.status.snapshot.eventsAcked == 25 }, "via \(host): \(shipper.status.snapshot)")
                #expect(await eventuallyTrue { (try? await spool.stats().events) == 0 })
            }
            #expect(try await collector.eventsReceived() == before + 25)
        }
        await collector.stop()
    }

    @Test(
        "An agent refuses a bad server certificate and keeps its spool",
        arguments: [
            (TestPKI.expired, "127.0.0.1"),
            (TestPKI.fromOtherCA, "127.0.0.1"),
            // Issued by the right CA for collector.elsewhere.example: neither the IP nor the name fits.
            (TestPKI.wrongHost, "127.0.0.1"),
            (TestPKI.wrongHost, "localhost"),
        ])
    func anAgentRefusesABadServerCertificate(certificate: String, host: String) async throws {
        let collector = try await ProtocolCollector.start(tls: try ServerTLS(pki.serverFiles(certificate), place: "tls.listen"))
        let endpoint = HostPort(host: host, port: collector.port)
        try await withTLSShipper(events: 10, to: endpoint, tls: ClientTLSFiles(ca: pki.ca)) { spool, shipper in
            #expect(await eventuallyTrue { shipper.status.snapshot.lastError != nil })
            let status = shipper.status.snapshot
            #expect(status.batchesAcked == 0 && status.eventsAcked == 0 && status.connectedTo == nil)
            let reason = status.lastError ?? ""
            #expect(
                reason.contains("CERTIFICATE_VERIFY_FAILED") || reason.contains("failedToValidateHostname"),
                "the reason names the certificate problem: \(reason)")
            let left = try await spool.stats().events
            #expect(left == 10)
        }
        #expect(try await collector.eventsReceived() == 0)
        await collector.stop()
    }

    @Test func aPlainAgentIsRefusedByATLSCollectorAndNothingIsWritten() async throws {
        let collector = try await ProtocolCollector.start(tls: try ServerTLS(pki.serverFiles(TestPKI.good), place: "tls.listen"))
        try await withTLSShipper(events: 10, to: collector.endpoint, tls: nil) { spool, shipper in
            #expect(await eventuallyTrue { shipper.status.snapshot.lastError != nil })
            #expect(shipper.status.snapshot.batchesAcked == 0)
            let left = try await spool.stats().events
            #expect(left == 10)
        }
        #expect(try await collector.eventsReceived() == 0)
        await collector.stop()
    }

    @Test func aClientCertificateMustNameTheAgentIdOfTheHello() async throws {
        let keys = ["tls-agent": AgentKey(secret: Array("s3cret".utf8))]
        let collector = try await ProtocolCollector.start(
            tls: try ServerTLS(pki.serverFiles(TestPKI.good, clientCA: pki.ca), place: "tls.listen"), keys: keys)
        func client(_ name: String) -> ClientTLSFiles {
            ClientTLSFiles(ca: pki.ca, certificate: pki.certificate(name), privateKey: pki.privateKey(name))
        }
        // Another agent's certificate, with this agent's key: refused.
        try await withTLSShipper(events: 5, to: collector.endpoint, key: "s3cret", tls: client(TestPKI.otherClient)) { spool, shipper in
            #expect(await eventuallyTrue { shipper.status.snapshot.lastError?.contains("authentication_failed") == true })
            #expect(shipper.status.snapshot.eventsAcked == 0)
        }
        // No client certificate at all: the TLS handshake fails.
        try await withTLSShipper(events: 5, to: collector.endpoint, key: "s3cret", tls: ClientTLSFiles(ca: pki.ca)) { _, shipper in
            #expect(await eventuallyTrue { shipper.status.snapshot.lastError != nil })
            #expect(shipper.status.snapshot.eventsAcked == 0)
        }
        #expect(try await collector.eventsReceived() == 0)
        // Its own certificate and key: shipped.
        try await withTLSShipper(events: 5, to: collector.endpoint, key: "s3cret", tls: client(TestPKI.agentClient)) { _, shipper in
            #expect(await eventuallyTrue { shipper.status.snapshot.eventsAcked == 5 }, "\(shipper.status.snapshot)")
        }
        #expect(try await collector.eventsReceived() == 5)
        await collector.stop()
    }

    @Test func aCollectorWithoutTLSRefusesPlainTCPFromPeersNotOnLoopback() async throws {
        let ledger = Ledger(store: try SQLiteLedgerStore(path: try tlsTemporaryDirectory() + "/ledger.db"))
        defer { Task { await ledger.shutdown() } }
        let keyring = AgentKeyring(keys: ["a": AgentKey(secret: Array("k".utf8))])
        func refusal(remote: Bool, allow: Bool) throws -> UInt16? {
            let settings = ProtocolServer.Settings(keyring: keyring, limits: .standard, eventLimits: .standard, allowPlaintextRemote: allow)
            let handler = try AgentConnection(
                settings: settings, ledger: ledger, metrics: CollectorMetrics(), logger: tlsTestLogger, peerIsLoopback: !remote,
                completions: AsyncStream.makeStream(of: ProtocolServer.ConnectionEvent.self).continuation)
            guard var bytes = handler.refusalForPeer() else { return nil }
            var decoder = FrameDecoder()
            guard case .error(let frame)? = try decoder.decode(buffer: &bytes) else { return nil }
            return frame.code
        }
        #expect(try refusal(remote: true, allow: false) == WireErrorCode.plaintextRefused.rawValue)
        #expect(try refusal(remote: true, allow: true) == nil)
        #expect(try refusal(remote: false, allow: false) == nil)
        #expect(PeerAddress.isLoopback(try SocketAddress(ipAddress: "127.0.0.9", port: 1)))
        #expect(PeerAddress.isLoopback(try SocketAddress(ipAddress: "::1", port: 1)))
        #expect(!PeerAddress.isLoopback(try SocketAddress(ipAddress: "10.1.2.3", port: 1)))
        #expect(!PeerAddress.isLoopback(try SocketAddress(ipAddress: "::ffff:10.1.2.3", port: 1)))
    }

    @Test func badTLSFilesStopTheStartWithTheirName() throws {
        let missing = ServerTLSFiles(certificate: pki.path("nope.crt"), privateKey: pki.privateKey(TestPKI.good))
        #expect(throws: TLSSetupError.self) { try ServerTLS(missing, place: "tls.listen") }
        do {
            _ = try ServerTLS(ServerTLSFiles(certificate: pki.privateKey(TestPKI.good), privateKey: pki.privateKey(TestPKI.good)), place: "tls.http")
        } catch {
            #expect(error.place == "tls.http.certificate" && error.cause != nil, "\(error)")
        }
    }
}
