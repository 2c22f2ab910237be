import Foundation
import TallyCore

/// The package root, found from this file's path.
let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent()

/// A "now" far after every test timestamp, so future-skew checks stay out of the way.
let farFuture = EventTime(microseconds: 4_000_000_000_000_000)

func decodeOne(_ json: String, defaultMetric: String? = nil, now: EventTime = farFuture) -> Result<UsageEvent, EventRejection> {
    let results = EventDecoder(defaultMetric: defaultMetric).decodeBody(Array(json.utf8), now: now)
    guard results.count == 1 else {
        return .failure(EventRejection(.malformed, field: nil, "expected one result, got \(results.count)"))
    }
    return results[0]
}

extension Result {
    var value: Success? { if case .success(let v) = self { v } else { nil } }
    var error: Failure? { if case .failure(let e) = self { e } else { nil } }
}
