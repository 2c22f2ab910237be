import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization
import TallyAgent
import TallyConfig
import TallyCore
import TallySpool
import TallyWire
import Testing

#if canImport(Glibc)
import Glibc
#endif

let testLogger: Logger = {
    var logger = Logger(label: "tally-agent-test")
    logger.logLevel = .critical
    return logger
}()

func temporaryDirectory() -> String {
    var template = Array("/tmp/tally-agent-test-XXXXXX".utf8CString)
    let path = template.withUnsafeMutableBufferPointer { buffer in mkdtemp(buffer.baseAddress!) }
    return path.map { String(cString: $0) } ?? "/tmp/tally-agent-test-fallback"
}

/// One fixed, recent time for every test event, so that an event built twice is equal.
let baseTime = EventTime(seconds: EventTime.now().seconds - 60)

func event(_ index: Int, tenant: String = "acme") -> UsageEvent {
    UsageEvent(
        tenant: tenant, metric: "api_calls", quantity: Quantity(1), timestamp: baseTime,
        id: "req-\(index)", properties: Properties([("endpoint", "/v1/search")]))
}

/// A real agent (HTTP on an ephemeral port, optional socket) run in a service group.
final class TestAgent: Sendable {
    let agent: Agent
    let port: Int
    let group: ServiceGroup
    let task: Task<Void, any Error>

    /// The timeout of the tests' `TallyClient`s: not the client's 10 s. They are not about
    /// timeouts, and a loaded full run left an in-process agent's answer past 10 s twice.
    static let clientTimeout: Duration = .seconds(120)

    static func start(
        configure: (inout AgentConfig) -> Void = { _ in }, collectors: [HostPort] = [HostPort(host: "127.0.0.1", port: 1)],
        fileOperations: any SpoolFileOperations = PosixFileOperations()
    ) async throws -> TestAgent {
        var config = AgentConfig()
        config.spoolDirectory = temporaryDirectory()
        config.listen = HostPort(host: "127.0.0.1", port: 0)
        config.collectors = collectors
        config.agentId = "test-agent"
        config.spool.fsync = .always
        config.reconnect.initial = .milliseconds(10)
        config.reconnect.maximum = .milliseconds(100)
        configure(&config)
        let agent = try await Agent.open(config: config, logger: testLogger, spoolFileOperations: fileOperations)
        let (ports, portSink) = AsyncStream.makeStream(of: Int.self)
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: agent.services(httpBound: { portSink.yield($0) }).map { .init(service: $0) }, logger: testLogger))
        let task = Task { try await group.run() }
        var iterator = ports.makeAsyncIterator()
        let port = await iterator.next() ?? 0
        return TestAgent(agent: agent, port: port, group: group, task: task)
    }

    init(agent: Agent, port: Int, group: ServiceGroup, task: Task<Void, any Error>) {
        self.agent = agent
        self.port = port
        self.group = group
        self.task = task
    }

    func stop() async {
        await group.triggerGracefulShutdown()
        _ = await task.result
        await agent.spool.close()
    }
}

/// Spool file operations whose fsync can be held shut, to prove answers wait for durability.
final class GatedFileOperations: SpoolFileOperations {
    private let base = PosixFileOperations()
    private let gate = Mutex<(closed: Bool, syncsWaiting: Int)>((false, 0))
    private let condition = ConditionLock()

    func close(gate closed: Bool) {
        gate.withLock { $0.closed = closed }
    }

    var syncsWaiting: Int { gate.withLock { $0.syncsWaiting } }

    func sync(_ fd: Int32, path: String) throws(SpoolError) {
        var counted = false
        while gate.withLock({ state in
            if state.closed && !counted {
                state.syncsWaiting += 1
                counted = true
            }
            return state.closed
        }) {
            condition.wait(milliseconds: 2)
        }
        if counted { gate.withLock { $0.syncsWaiting -= 1 } }
        try base.sync(fd, path: path)
    }

    func open(_ path: String, create: Bool, readOnly: Bool) throws(SpoolError) -> Int32 { try base.open(path, create: create, readOnly: readOnly) }
    func close(_ fd: Int32) { base.close(fd) }
    func write(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, at offset: Int64, path: String) throws(SpoolError) {
        try base.write(fd, bytes, at: offset, path: path)
    }
    func read(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, at offset: Int64, path: String) throws(SpoolError) -> Int {
        try base.read(fd, into: buffer, at: offset, path: path)
    }
    func truncate(_ fd: Int32, to size: Int64, path: String) throws(SpoolError) { try base.truncate(fd, to: size, path: path) }
    func size(_ fd: Int32, path: String) throws(SpoolError) -> Int64 { try base.size(fd, path: path) }
    func rename(_ from: String, to: String) throws(SpoolError) { try base.rename(from, to: to) }
    func remove(_ path: String) throws(SpoolError) { try base.remove(path) }
    func list(_ directory: String) throws(SpoolError) -> [String] { try base.list(directory) }
    func makeDirectory(_ path: String) throws(SpoolError) { try base.makeDirectory(path) }
    func lock(_ fd: Int32, path: String) throws(SpoolError) -> Bool { try base.lock(fd, path: path) }
}

/// A short blocking wait for the spool's I/O thread (never used on an event loop or the
/// concurrency pool).
final class ConditionLock: Sendable {
    func wait(milliseconds: Int) { usleep(UInt32(milliseconds * 1_000)) }
}
