import Foundation
import Synchronization
import TallyCore
import TallyWorkload

#if canImport(Glibc)
import Glibc
#endif

/// Reference-workload NDJSON for the agent benchmark: a seed per phase (distinct random request
/// ids), the stream clock ending about ten minutes ago at 1,000 events per simulated second.
enum AgentWorkload {
    static func workload(seed: UInt64, lines: Int) throws -> ReferenceWorkload {
        let start = EventTime.now().advanced(by: .seconds(-Int64(lines / 1000) - 600))
        return try ReferenceWorkload(WorkloadConfiguration(seed: seed, events: lines, start: start, rate: 1000))
    }

    /// `lines` lines cut into chunks of `linesPerChunk` whole lines.
    static func chunks(seed: UInt64, lines: Int, linesPerChunk: Int) throws -> [[UInt8]] {
        var workload = try workload(seed: seed, lines: lines)
        var chunks: [[UInt8]] = []
        var chunk: [UInt8] = []
        var inChunk = 0
        while workload.appendNextLine(to: &chunk) != nil {
            inChunk += 1
            if inChunk == linesPerChunk {
                chunks.append(chunk)
                chunk = []
                chunk.reserveCapacity(linesPerChunk * 256)
                inChunk = 0
            }
        }
        if !chunk.isEmpty { chunks.append(chunk) }
        return chunks
    }
}

/// What a socket stream run saw: answer lines by kind, and client failures.
struct StreamRun: Sendable {
    var ok = 0
    var err = 0
    var full = 0
    var failures: [String] = []
    var lines: Int { ok + err + full }
}

/// What an HTTP run saw: requests, accepted events (from the answers), statuses, failures.
struct HTTPRun: Sendable {
    var requests = 0
    var accepted = 0
    var statuses: [Int: Int] = [:]
    var failures: [String] = []
}

/// The agent benchmark's clients on dedicated threads with blocking sockets.
enum AgentDrivers {
    /// NDJSON streams on the agent's Unix socket: per connection one thread writes whatever
    /// `produce(connection)` yields (whole lines, without waiting) and one counts the answer lines;
    /// `lines[connection]` answers are expected.
    static func stream(
        path: String, lines: [Int], produce: @escaping @Sendable (Int) -> any StreamProducer
    ) async throws -> StreamRun {
        var fds: [Int32] = []
        defer { for fd in fds { close(fd) } }
        for _ in lines.indices { fds.append(try connectRetrying(path: path)) }
        let result = Locked(StreamRun())
        await onThreads(lines.count * 2) { [fds] index in
            let connection = index / 2
            let fd = fds[connection]
            if index % 2 == 0 {
                var producer = produce(connection)
                do {
                    while let chunk = producer.next() { try BenchSocket.writeAll(fd, chunk) }
                } catch {
                    result.withLock { $0.failures.append("writer \(connection): \(error)") }
                }
            } else {
                var counter = AnswerCounter()
                do { try counter.read(from: fd, expected: lines[connection]) } catch {
                    result.withLock { $0.failures.append("reader \(connection): \(error)") }
                }
                result.withLock {
                    $0.ok += counter.ok
                    $0.err += counter.err
                    $0.full += counter.full
                }
            }
        }
        return result.value
    }

    /// The agent's socket may bind a moment after its HTTP port answers.
    static func connectRetrying(path: String) throws -> Int32 {
        let deadline = ContinuousClock.now + .seconds(10)
        while true {
            do { return try BenchSocket.unix(path: path) } catch {
                if ContinuousClock.now > deadline { throw error }
                usleep(5_000)
            }
        }
    }

    /// `requests` on `connections` keep-alive connections, one request in flight on each; with
    /// `every`, request k is sent no earlier than start + k x `every` (a paced rate).
    static func post(port: Int, requests: [[UInt8]], connections: Int, every: Duration? = nil) async -> HTTPRun {
        let result = Locked(HTTPRun())
        let start = ContinuousClock.now
        await onThreads(connections) { connection in
            var run = HTTPRun()
            do {
                var client = try BenchHTTPConnection(port: port)
                defer { client.close() }
                for index in stride(from: connection, to: requests.count, by: connections) {
                    if let every {
                        let due = start + every * index
                        let wait = due - ContinuousClock.now
                        let micros = wait.components.seconds * 1_000_000 + wait.components.attoseconds / 1_000_000_000_000
                        if micros > 0 { usleep(UInt32(clamping: micros)) }
                    }
                    let answer = try client.exchange(requests[index])
                    run.requests += 1
                    run.statuses[answer.status, default: 0] += 1
                    run.accepted += BenchHTTPConnection.acceptedCount(answer.body)
                }
            } catch {
                run.failures.append("connection \(connection): \(error)")
            }
            result.withLock { total in
                total.requests += run.requests
                total.accepted += run.accepted
                total.statuses.merge(run.statuses, uniquingKeysWith: +)
                total.failures += run.failures
            }
        }
        return result.value
    }

    /// `POST /v1/events` request bytes, one per chunk.
    static func requests(_ chunks: [[UInt8]]) -> [[UInt8]] {
        chunks.map { BenchHTTPConnection.request("POST", "/v1/events", body: $0) }
    }
}

/// Chunks of NDJSON for one stream connection, produced on its writer thread.
protocol StreamProducer {
    mutating func next() -> [UInt8]?
}

/// Pre-generated chunks (the timed figures: the client only writes).
struct ChunkList: StreamProducer {
    let chunks: [[UInt8]]
    var index = 0
    init(_ chunks: [[UInt8]]) { self.chunks = chunks }
    mutating func next() -> [UInt8]? {
        guard index < chunks.count else { return nil }
        defer { index += 1 }
        return chunks[index]
    }
}

/// Lines generated on the fly (filling a backlog: memory stays flat, speed is secondary).
struct GeneratedLines: StreamProducer {
    var workload: ReferenceWorkload
    let linesPerChunk: Int
    mutating func next() -> [UInt8]? {
        var chunk: [UInt8] = []
        chunk.reserveCapacity(linesPerChunk * 256)
        var lines = 0
        while lines < linesPerChunk, workload.appendNextLine(to: &chunk) != nil { lines += 1 }
        return chunk.isEmpty ? nil : chunk
    }
}
