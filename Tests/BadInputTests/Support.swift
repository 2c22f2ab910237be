import Foundation
import Logging
import NIOCore
import ServiceLifecycle
import TallyAgent
import TallyConfig
import TallyCore
import TallySpool

/// Shared by every table: a quiet logger, temporary directories, Prometheus text, and a real
/// agent run in-process (HTTP on an ephemeral port, optionally the Unix socket).
///
/// The tables that start agents, collectors or spools per row are `.serialized`: run in parallel,
/// their hundreds of rows held over 2,000 descriptors open at once, past the count at which
/// Foundation's `Process.run` crashes the test process (`ChildSpawner.openDescriptorLimit`).

let quietLogger: Logger = {
    var logger = Logger(label: "tally-bad-input")
    logger.logLevel = .critical
    return logger
}()

/// A fresh directory under the system's temporary directory; the caller removes it.
func makeTemporaryDirectory(_ label: String) -> String {
    let path = NSTemporaryDirectory() + "tally-bad-input-\(label)-" + UUID().uuidString
    try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

func removeDirectory(_ path: String) {
    try? FileManager.default.removeItem(atPath: path)
}

/// Matches `text` against `pattern`, where each `*` stands for any run of characters (for the
/// parts of a message that name the current time). A pattern without `*` must equal the text.
func matches(_ text: String, _ pattern: String) -> Bool {
    let parts = pattern.components(separatedBy: "*")
    guard parts.count > 1 else { return text == pattern }
    guard text.hasPrefix(parts[0]), let last = parts.last, text.hasSuffix(last),
        text.count >= parts[0].count + last.count
    else { return false }
    var rest = Substring(text.dropFirst(parts[0].count).dropLast(last.count))
    for middle in parts.dropFirst().dropLast() where !middle.isEmpty {
        guard let range = rest.range(of: middle) else { return false }
        rest = rest[range.upperBound...]
    }
    return true
}

/// One sample's value in a Prometheus text exposition (`name{labels}` as printed), or nil when
/// the series is not there.
func sample(_ exposition: String, _ series: String) -> Double? {
    for line in exposition.split(separator: "\n") where line.hasPrefix(series + " ") {
        return Double(line.dropFirst(series.count + 1))
    }
    return nil
}

/// The agent's rejection counters by reason, its received and accepted counters, and its
/// refused-request counters by status: every counter a bad event can move.
struct AgentCounters: Equatable, CustomStringConvertible {
    var received = 0
    var accepted = 0
    var rejected: [RejectionReason: Int] = [:]
    var refused: [Int: Int] = [:]

    init() {}

    init(_ metrics: AgentMetrics) {
        let text = String(decoding: metrics.exposition(), as: UTF8.self)
        func value(_ series: String) -> Int { Int(sample(text, series) ?? 0) }
        received = value("tally_agent_events_received_total")
        accepted = value("tally_agent_events_accepted_total")
        for reason in RejectionReason.allCases {
            let count = value("tally_agent_events_rejected_total{reason=\"\(reason.rawValue)\"}")
            if count != 0 { rejected[reason] = count }
        }
        for status in [400, 413, 415, 429, 503] {
            let count = value("tally_agent_requests_refused_total{status=\"\(status)\"}")
            if count != 0 { refused[status] = count }
        }
    }

    var description: String { "received \(received), accepted \(accepted), rejected \(rejected), refused \(refused)" }
}

/// A real agent — spool, ingest, HTTP server, optional Unix socket, shipper — run in a service
/// group for one table row, with its own spool directory and metrics. Its collector is a port
/// nobody listens on: what arrives stays in the spool, where the row can read it back.
final class AgentUnderTest: Sendable {
    let agent: Agent
    let port: Int
    let socketPath: String?
    let directory: String
    private let group: ServiceGroup
    private let task: Task<Void, any Error>

    static func start(socket: Bool = false, configure: (inout AgentConfig) -> Void = { _ in }) async throws -> AgentUnderTest {
        let directory = makeTemporaryDirectory("agent")
        var config = AgentConfig()
        config.spoolDirectory = directory + "/spool"
        config.listen = HostPort(host: "127.0.0.1", port: 0)
        config.socketPath = socket ? directory + "/agent.sock" : nil
        config.collectors = [HostPort(host: "127.0.0.1", port: 1)]
        config.agentId = "bad-input-agent"
        config.spool.fsync = .always
        config.reconnect.initial = .seconds(60)
        config.reconnect.maximum = .seconds(60)
        configure(&config)
        let agent = try await Agent.open(config: config, logger: quietLogger)
        // The HTTP port, and -1 once the socket (when there is one) listens.
        let (bound, sink) = AsyncStream.makeStream(of: Int.self)
        let services = agent.services(httpBound: { sink.yield($0) }, socketBound: { sink.yield(-1) })
        let group = ServiceGroup(configuration: ServiceGroupConfiguration(services: services.map { .init(service: $0) }, logger: quietLogger))
        let task = Task {
            // A group that stops (or never starts) ends the wait below.
            defer { sink.finish() }
            try await group.run()
        }
        var port = 0
        var socketListening = !socket
        for await value in bound {
            if value < 0 { socketListening = true } else { port = value }
            if port != 0 && socketListening { break }
        }
        return AgentUnderTest(agent: agent, port: port, socketPath: config.socketPath, directory: directory, group: group, task: task)
    }

    private init(agent: Agent, port: Int, socketPath: String?, directory: String, group: ServiceGroup, task: Task<Void, any Error>) {
        self.agent = agent
        self.port = port
        self.socketPath = socketPath
        self.directory = directory
        self.group = group
        self.task = task
    }

    var counters: AgentCounters { AgentCounters(agent.metrics) }

    /// Every event in the spool, oldest first.
    func spooledEvents() async throws -> [UsageEvent] {
        var events: [UsageEvent] = []
        var batch = try await agent.spool.readFromAcknowledged(maxEvents: 1_000)
        while !batch.events.isEmpty {
            events += batch.events
            batch = try await agent.spool.read(from: batch.end, maxEvents: 1_000)
        }
        return events
    }

    func stop() async {
        await group.triggerGracefulShutdown()
        _ = await task.result
        await agent.spool.close()
        removeDirectory(directory)
    }
}
