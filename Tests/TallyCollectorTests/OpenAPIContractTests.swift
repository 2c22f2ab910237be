import Foundation
import Logging
import NIOCore
import Prometheus
import ServiceLifecycle
import TallyAgent
import TallyClient
import TallyConfig
import Testing

@testable import TallyCollector

/// The OpenAPI documents in `protocol/` against the routes the two HTTP servers really have:
/// a route added without documenting it, or documented without existing, fails here.
///
/// - The collector's routes come from its running code: the Hummingbird router that
///   ``CollectorHTTP/router(registry:readiness:api:refusePlaintextRemote:)`` builds lists them.
/// - The agent's HTTP server dispatches in one `switch` (`HTTPIngestServer.route`), which no
///   code can list; its cases are read from the source, every one of them or the test fails,
///   and the result is probed on a running agent: each documented operation is served, every
///   other method on those paths answers `405` and names the documented ones in `Allow`.
///
/// Schemathesis checks the documents' bodies and statuses against live servers
/// (EndToEndTests/OpenAPIFuzzTests.swift).
@Suite struct OpenAPIContractTests {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    static let collectorDocument = packageRoot.appendingPathComponent("protocol/openapi.yaml").path
    static let agentDocument = packageRoot.appendingPathComponent("protocol/openapi-agent.yaml").path
    static let agentServerSource = packageRoot.appendingPathComponent("Sources/TallyAgent/HTTPIngestServer.swift").path

    @Test(arguments: [collectorDocument, agentDocument])
    func documentIsConsistent(_ file: String) throws {
        let document = try OpenAPIDocument(file: file)
        #expect(document.version == "3.1.0", "\(file)")
        #expect(!document.operations.isEmpty, "\(file)")
        #expect(document.unresolvedReferences.isEmpty, "\(file): \(document.unresolvedReferences)")
        #expect(document.pathParameterMismatches.isEmpty, "\(file): \(document.pathParameterMismatches)")
        #expect(document.operationsWithoutResponses.isEmpty, "\(file): \(document.operationsWithoutResponses)")
    }

    @Test func collectorDocumentListsExactlyTheRoutesOfTheRouter() async throws {
        let fixture = try BillingFixture()
        let router = CollectorHTTP.router(
            registry: PrometheusCollectorRegistry(), readiness: { .ready },
            api: CollectorAPI(service: fixture.service, access: APIAccess(adminKey: BillingFixture.adminKey, tenantKeys: [:])),
            refusePlaintextRemote: true)
        let served = Set(router.routes.map { OpenAPIDocument.Operation(method: $0.method.rawValue, path: $0.path.description) })
        await fixture.shutdown()
        let documented = try OpenAPIDocument(file: Self.collectorDocument).operations
        // The router's own spelling of a template is OpenAPI's: `/v1/tenants/{tenant}/charges`.
        #expect(served.contains(.init(method: "GET", path: "/v1/tenants/{tenant}/charges")), "\(served.sorted())")
        #expect(
            served.subtracting(documented).isEmpty,
            "the collector serves routes protocol/openapi.yaml does not document: \(served.subtracting(documented).sorted())")
        #expect(
            documented.subtracting(served).isEmpty,
            "protocol/openapi.yaml documents routes the collector does not serve: \(documented.subtracting(served).sorted())")
    }

    @Test func agentDocumentListsExactlyTheRoutesOfTheServer() async throws {
        let source = try AgentRouteSource(file: Self.agentServerSource)
        #expect(source.unreadableCases.isEmpty, "cases of HTTPIngestServer.route this test cannot read; teach it: \(source.unreadableCases)")
        #expect(
            Set(source.routes.map(\.path)) == source.methodNotAllowedPaths,
            "the 405 case must name exactly the routed paths: \(source.routes.sorted()) vs \(source.methodNotAllowedPaths.sorted())")
        let documented = try OpenAPIDocument(file: Self.agentDocument).operations
        #expect(source.routes.contains(.init(method: "POST", path: "/v1/events")), "\(source.routes.sorted())")
        #expect(
            source.routes.subtracting(documented).isEmpty,
            "the agent serves routes protocol/openapi-agent.yaml does not document: \(source.routes.subtracting(documented).sorted())")
        #expect(
            documented.subtracting(source.routes).isEmpty,
            "protocol/openapi-agent.yaml documents routes the agent does not serve: \(documented.subtracting(source.routes).sorted())")

        // The running agent: what is documented is served, any other method on a documented
        // path is 405 with the documented methods in `Allow`, and a path nobody documented is 404.
        let agent = try await RunningAgent.start()
        let exchange = HTTPExchange(host: "127.0.0.1", port: agent.port)
        var answers: [String] = []
        for path in Set(documented.map(\.path)).sorted() {
            let allowed = documented.filter { $0.path == path }.map(\.method).sorted().joined(separator: ", ")
            for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
                let answer = try await exchange.request(
                    method: method, path: path, headers: [("Content-Type", "application/json")], body: ByteBuffer(string: "[]"))
                answers.append("\(method) \(path): \(answer.status)")
                if documented.contains(.init(method: method, path: path)) {
                    #expect(answer.status != 404 && answer.status != 405, "documented \(method) \(path) answered \(answer.status)")
                } else {
                    #expect(answer.status == 405, "undocumented \(method) \(path) answered \(answer.status), not 405")
                    #expect(answer.header("Allow") == allowed, "\(method) \(path): Allow \(answer.header("Allow") ?? "none"), documented \(allowed)")
                }
            }
        }
        let unknown = try await exchange.request(method: "GET", path: "/v1/undocumented").status
        await agent.stop()
        #expect(unknown == 404)
        #expect(answers.count == Set(documented.map(\.path)).count * 6, "\(answers)")
    }
}

/// The routes of the agent's HTTP server, read from the `switch` of `HTTPIngestServer.route`:
/// `case (.POST, "/v1/events"):` is a route; `case (_, "/v1/events"), (_, "/healthz"):` lists
/// the paths that answer 405 to other methods; `default:` ends the switch. Any other case is
/// reported as unreadable, so a route added some other way cannot slip past.
struct AgentRouteSource {
    var routes: Set<OpenAPIDocument.Operation> = []
    var methodNotAllowedPaths: Set<String> = []
    var unreadableCases: [String] = []

    init(file: String) throws {
        let text = try String(contentsOfFile: file, encoding: .utf8)
        guard let start = text.range(of: "private func route(") else { throw FixtureError("no route function in \(file)") }
        guard let end = text.range(of: "default:", range: start.upperBound..<text.endIndex) else {
            throw FixtureError("the route switch in \(file) has no default case")
        }
        let route = try Regex(#"^case \(\.([A-Z]+), "(/[^"]*)"\):$"#)
        let notAllowed = try Regex(#"^case (\(_, "/[^"]*"\)(, )?)+:$"#)
        let quoted = try Regex(#""(/[^"]*)""#)
        for line in text[start.upperBound..<end.lowerBound].split(separator: "\n") {
            let code = line.trimmingCharacters(in: .whitespaces)
            guard code.hasPrefix("case ") else { continue }
            if let match = try route.wholeMatch(in: code), let method = match[1].substring, let path = match[2].substring {
                routes.insert(.init(method: String(method), path: String(path)))
            } else if try notAllowed.wholeMatch(in: code) != nil {
                for match in code.matches(of: quoted) {
                    if let path = match[1].substring { methodNotAllowedPaths.insert(String(path)) }
                }
            } else {
                unreadableCases.append(code)
            }
        }
    }
}

/// An agent (spool in a temporary directory, HTTP on a loopback port the kernel picks, no
/// collector reachable) run in a service group.
final class RunningAgent: Sendable {
    let port: Int
    private let agent: Agent
    private let directory: URL
    private let group: ServiceGroup
    private let task: Task<Void, any Error>

    static func start() async throws -> RunningAgent {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tally-openapi-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var logger = Logger(label: "openapi-contract")
        logger.logLevel = .critical
        var config = AgentConfig()
        config.spoolDirectory = directory.appendingPathComponent("spool").path
        config.listen = HostPort(host: "127.0.0.1", port: 0)
        config.collectors = [HostPort(host: "127.0.0.1", port: 1)]
        config.agentId = "openapi-contract"
        config.reconnect.initial = .seconds(60)
        config.reconnect.maximum = .seconds(60)
        // This test is about routes, not deadlines: on a loaded CI machine (chaos tests beside
        // it) a request's head once took longer than the default 10 s to follow its connect,
        // and the agent rightly closed the connection.
        config.http.headerTimeout = .seconds(600)
        config.http.bodyTimeout = .seconds(600)
        config.http.idleTimeout = .seconds(600)
        let agent = try await Agent.open(config: config, logger: logger)
        let (bound, sink) = AsyncStream.makeStream(of: Int.self)
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: agent.services(httpBound: { sink.yield($0) }).map { .init(service: $0) }, logger: logger))
        let task = Task {
            // A group that stops (or never starts) ends the wait below.
            defer { sink.finish() }
            try await group.run()
        }
        var ports = bound.makeAsyncIterator()
        guard let port = await ports.next() else {
            let ended = await task.result
            await agent.spool.close()
            throw FixtureError("the agent's HTTP server did not start: \(ended)")
        }
        return RunningAgent(port: port, agent: agent, directory: directory, group: group, task: task)
    }

    private init(port: Int, agent: Agent, directory: URL, group: ServiceGroup, task: Task<Void, any Error>) {
        self.port = port
        self.agent = agent
        self.directory = directory
        self.group = group
        self.task = task
    }

    func stop() async {
        await group.triggerGracefulShutdown()
        _ = await task.result
        await agent.spool.close()
        try? FileManager.default.removeItem(at: directory)
    }
}
