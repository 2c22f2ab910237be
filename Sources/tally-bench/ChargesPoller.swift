import Foundation
import TallyCore

/// Customers' dashboards: one keep-alive connection asking a collector for a tenant's
/// month-to-date charges (`GET /v1/tenants/T/charges`) every `interval` (a call that takes
/// longer delays the next; no catching up), on its own thread, until stopped. What `tally-bench agent` times while an agent drains into the collector at full
/// speed and again once it is idle (issue 12: reads under ingest ≤ 2× the idle p99).
final class ChargesPoller: Sendable {
    /// Latencies of the answers that were 200, and how many were not (an unknown tenant before
    /// its first batch lands answers 404).
    struct Answers: Sendable {
        var times: [Duration] = []
        var other = 0
        var failure: String?
    }

    private let answers = Locked(Answers())
    private let stopping = Locked(false)
    private let finished = DispatchSemaphore(value: 0)

    /// Starts polling; stops after `limit` answers of 200 if given, else when ``stop()`` is called.
    init(port: Int, tenant: String, interval: Duration, limit: Int? = nil) {
        let request = BenchHTTPConnection.request("GET", "/v1/tenants/\(tenant)/charges")
        let thread = Thread { [self] in
            // Named, so that `perf sched` tells its wakeups from the bench's other threads.
            ThreadName.set("bench-charges")
            defer { finished.signal() }
            do {
                var client = try BenchHTTPConnection(port: port)
                defer { client.close() }
                var next = ContinuousClock.now
                while !stopping.value {
                    let now = ContinuousClock.now
                    if next > now { Thread.sleep(forTimeInterval: (next - now).seconds) }  // pacing, not synchronisation
                    next = ContinuousClock.now + interval
                    let start = ContinuousClock.now
                    let answer = try client.exchange(request)
                    let elapsed = ContinuousClock.now - start
                    let done = answers.withLock { answers in
                        if answer.status == 200 { answers.times.append(elapsed) } else { answers.other += 1 }
                        return limit.map { answers.times.count >= $0 } ?? false
                    }
                    if done { break }
                }
            } catch {
                answers.withLock { $0.failure = "\(error)" }
            }
        }
        thread.start()
    }

    /// Stops after the call in flight and returns what was timed.
    func stop() async -> Answers {
        stopping.withLock { $0 = true }
        return await finish()
    }

    /// Waits for the poller to end by itself (after its `limit`).
    func finish() async -> Answers {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            DispatchQueue.global().async { [finished] in
                finished.wait()
                continuation.resume()
            }
        }
        return answers.value
    }
}

/// The collector's own timing of the charges calls: its request histogram
/// (`tally_collector_http_request_seconds`, route `/v1/tenants/{tenant}/charges`) read from
/// `/metrics`, cumulative since start. The difference of two readings is one phase's calls as
/// the collector saw them, from the router to the answer: it tells the time spent inside the
/// collector's handler from the time the call waited in sockets, event loops and run queues.
struct ServerChargesTimes {
    /// Cumulative count per bucket bound (seconds, as printed), in the histogram's order.
    var buckets: [(bound: String, seconds: Double, count: Int)] = []
    var sum = 0.0
    var count = 0

    /// The collector's current reading; nil when `/metrics` does not answer.
    static func read(port: Int) -> ServerChargesTimes? {
        guard let answer = BenchHTTPConnection.get(port: port, "/metrics"), answer.status == 200 else { return nil }
        var times = ServerChargesTimes()
        let route = #"route="/v1/tenants/{tenant}/charges""#
        for line in answer.body.split(separator: "\n") where line.hasPrefix("tally_collector_http_request_seconds") && line.contains(route) {
            guard let value = line.split(separator: " ").last else { continue }
            if line.hasPrefix("tally_collector_http_request_seconds_bucket"), let le = line.range(of: #"le=""#) {
                let bound = line[le.upperBound...].prefix { $0 != "\"" }
                times.buckets.append((String(bound), Double(bound) ?? .infinity, Int(value) ?? 0))
            } else if line.hasPrefix("tally_collector_http_request_seconds_sum") {
                times.sum = Double(value) ?? 0
            } else if line.hasPrefix("tally_collector_http_request_seconds_count") {
                times.count = Int(value) ?? 0
            }
        }
        return times
    }

    /// The calls between `earlier` and this reading.
    func since(_ earlier: ServerChargesTimes?) -> ServerChargesTimes {
        guard let earlier else { return self }
        var phase = self
        phase.sum -= earlier.sum
        phase.count -= earlier.count
        for index in phase.buckets.indices {
            if let before = earlier.buckets.first(where: { $0.bound == phase.buckets[index].bound }) { phase.buckets[index].count -= before.count }
        }
        return phase
    }

    /// "mean / p99 ≤ bound" in milliseconds: the p99 as the smallest bucket bound that holds
    /// 99% of the calls (the histogram's resolution), and the share of calls above 2 ms.
    var summary: String {
        guard count > 0 else { return "no calls" }
        let mean = sum / Double(count) * 1000
        let p99 = buckets.first { Double($0.count) >= Double(count) * 0.99 }.map { $0.seconds * 1000 } ?? .infinity
        let over2ms = count - (buckets.first { $0.seconds >= 0.002 }?.count ?? count)
        return String(format: "%.3f / ≤ %g (%.2f%% over 2 ms)", mean, p99, Double(over2ms) * 100 / Double(count))
    }
}
