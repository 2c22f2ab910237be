import Foundation

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
