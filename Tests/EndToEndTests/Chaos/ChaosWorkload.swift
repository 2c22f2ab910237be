import Foundation
import Synchronization
import TallyCore
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// One event of the chaos workload: its natural key and its quantity, all the truth needs.
struct ChaosEvent: Sendable, Hashable {
    let id: String
    let tenant: String
    let metric: String
    let quantity: Quantity
    let timestamp: EventTime

    var period: BillingPeriod { BillingPeriod(containing: timestamp) }

    var jsonLine: String {
        #"{"tenant":"\#(tenant)","metric":"\#(metric)","quantity":\#(quantity),"timestamp":"\#(timestamp)","id":"\#(id)"}"#
    }
}

/// One request to an agent: the same bytes on every retry, so a retry is the same events (same
/// tenant, metric, time and id: the same fingerprint, protocol/FINGERPRINT.md).
struct ChaosRequest: Sendable {
    let events: [ChaosEvent]
    let body: Data

    init(events: [ChaosEvent]) {
        self.events = events
        body = Data(events.map(\.jsonLine).joined(separator: "\n").utf8)
    }
}

/// The truth of one tenant, metric and period: the events acknowledged for it, each once.
struct TruthCell: Sendable, Hashable, Comparable {
    let tenant: String
    let metric: String
    let period: BillingPeriod

    static func < (lhs: TruthCell, rhs: TruthCell) -> Bool {
        (lhs.tenant, lhs.metric, lhs.period.description) < (rhs.tenant, rhs.metric, rhs.period.description)
    }
}

/// What the agents answered their callers: the oracle. An event is *acknowledged* when an agent
/// answered 200 to a request that carried it (every event of it `accepted`); the truth is computed
/// from the acknowledged events alone, each id once however many times it was acknowledged.
final class ChaosOracle: Sendable {
    struct Counts: Sendable {
        var posts = 0
        var acknowledgedRequests = 0
        var refusedPosts = 0
        var failedPosts = 0
        var retriesToSameAgent = 0
        var retriesToOtherAgent = 0
    }

    private struct State {
        var sent: [String: ChaosEvent] = [:]
        var acknowledged: [String: ChaosEvent] = [:]
        var acknowledgedBy: [Int: Set<String>] = [:]
        var acknowledgedRequests: [(request: ChaosRequest, agent: Int)] = []
        var counts = Counts()
    }

    private let state = Mutex(State())

    func sending(_ request: ChaosRequest) {
        state.withLock { state in
            for event in request.events { state.sent[event.id] = event }
        }
    }

    /// Records one answer of `agent` to `request` (nil: no HTTP answer at all).
    func answered(_ request: ChaosRequest, by agent: Int, status: Int?) {
        state.withLock { state in
            state.counts.posts += 1
            switch status {
            case 200?:
                state.counts.acknowledgedRequests += 1
                state.acknowledgedRequests.append((request, agent))
                for event in request.events {
                    state.acknowledged[event.id] = event
                    state.acknowledgedBy[agent, default: []].insert(event.id)
                }
            case nil: state.counts.failedPosts += 1
            default: state.counts.refusedPosts += 1
            }
        }
    }

    func retried(toSameAgent: Bool) {
        state.withLock { state in
            if toSameAgent {
                state.counts.retriesToSameAgent += 1
            } else {
                state.counts.retriesToOtherAgent += 1
            }
        }
    }

    /// An acknowledged request and the agent that acknowledged it, picked with `random`.
    func acknowledgedRequest(using random: inout SplitMix64) -> (request: ChaosRequest, agent: Int)? {
        state.withLock { state in
            guard !state.acknowledgedRequests.isEmpty else { return nil }
            return state.acknowledgedRequests[Int.random(in: 0..<state.acknowledgedRequests.count, using: &random)]
        }
    }

    var counts: Counts { state.withLock { $0.counts } }
    var sent: [String: ChaosEvent] { state.withLock { $0.sent } }
    var acknowledged: [String: ChaosEvent] { state.withLock { $0.acknowledged } }
    func acknowledged(by agent: Int) -> Set<String> { state.withLock { $0.acknowledgedBy[agent] ?? [] } }

    /// Count and sum of the acknowledged events per tenant, metric and period.
    func truth() throws -> [TruthCell: (count: Int, sum: Quantity)] {
        var cells: [TruthCell: (count: Int, sum: Quantity)] = [:]
        for event in acknowledged.values {
            let cell = TruthCell(tenant: event.tenant, metric: event.metric, period: event.period)
            let old = cells[cell] ?? (0, .zero)
            cells[cell] = (old.count + 1, try old.sum.adding(event.quantity))
        }
        return cells
    }
}

/// The callers: writers that post requests of new events to their agent until each is answered
/// 200 — moving to another agent when theirs does not answer — and now and then post an
/// acknowledged request again (a client retry, to the same or another agent).
final class ChaosTraffic: Sendable {
    static let tenants = (0..<6).map { "chaos-\($0)" }
    static let metrics = ["api_calls", "bytes_out"]

    let seed: UInt64
    let agentPorts: [Int]
    let oracle: ChaosOracle
    let stopping = Atomic<Bool>(false)

    init(seed: UInt64, agentPorts: [Int], oracle: ChaosOracle) {
        self.seed = seed
        self.agentPorts = agentPorts
        self.oracle = oracle
    }

    /// Runs writer `index` until ``stopping`` is set and its last request is acknowledged, or
    /// `deadline` passes.
    func write(_ index: Int, deadline: ContinuousClock.Instant) async {
        var random = SplitMix64(seed: seed &+ UInt64(index + 1) &* 0x9E37_79B9)
        var agent = index % agentPorts.count
        var number = 0
        while ContinuousClock.now < deadline, !stopping.load(ordering: .relaxed) {
            let request = makeRequest(writer: index, number: number, random: &random)
            number += 1
            oracle.sending(request)
            while ContinuousClock.now < deadline, !Task.isCancelled {
                let status = await Self.post(request.body, port: agentPorts[agent])
                oracle.answered(request, by: agent, status: status)
                if status == 200 { break }
                // Not acknowledged: the same bytes again, here or (half the time) elsewhere.
                if Bool.random(using: &random) { agent = (agent + 1) % agentPorts.count }
                try? await Task.sleep(for: .milliseconds(Int.random(in: 50...200, using: &random)))
            }
            if Int.random(in: 0..<25, using: &random) == 0 {
                await retry(using: &random)
            }
            try? await Task.sleep(for: .milliseconds(Int.random(in: 20...120, using: &random)))
        }
    }

    /// Posts an acknowledged request again, to the agent that took it or another one.
    func retry(using random: inout SplitMix64) async {
        guard let (request, first) = oracle.acknowledgedRequest(using: &random) else { return }
        let agent = Int.random(in: 0..<agentPorts.count, using: &random)
        oracle.retried(toSameAgent: agent == first)
        let status = await Self.post(request.body, port: agentPorts[agent])
        oracle.answered(request, by: agent, status: status)
    }

    private func makeRequest(writer: Int, number: Int, random: inout SplitMix64) -> ChaosRequest {
        let now = EventTime.now()
        let events = (0..<Int.random(in: 5...40, using: &random)).map { offset in
            let metric = Self.metrics[Int.random(in: 0..<Self.metrics.count, using: &random)]
            // Whole calls; bytes with up to three decimals, to prove the sums are exact.
            let quantity =
                metric == "api_calls"
                ? Quantity(Int64.random(in: 1...5, using: &random))
                : Quantity(nanos: Int128(Int64.random(in: 1...5_000_000, using: &random)) * 1_000_000)
            return ChaosEvent(
                id: "c\(seed)-w\(writer)-\(number)-\(offset)", tenant: Self.tenants[Int.random(in: 0..<Self.tenants.count, using: &random)],
                metric: metric, quantity: quantity,
                timestamp: now.advanced(by: .microseconds(-Int64.random(in: 0..<20_000_000, using: &random))))
        }
        return ChaosRequest(events: events)
    }

    /// POSTs an NDJSON body to an agent; the HTTP status, or nil when there was no answer.
    static func post(_ body: Data, port: Int) async -> Int? {
        guard let url = URL(string: "http://127.0.0.1:\(port)/v1/events") else { return nil }
        var request = URLRequest(url: url)
        request.httpMethod = "POST"
        request.timeoutInterval = 30
        request.setValue("application/x-ndjson", forHTTPHeaderField: "Content-Type")
        guard let (_, response) = try? await URLSession.shared.upload(for: request, from: body) else { return nil }
        return (response as? HTTPURLResponse)?.statusCode
    }
}
