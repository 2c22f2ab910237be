import TallyCore

/// The ways the reference workload breaks a line on purpose. Every such line must be rejected
/// by `EventDecoder` at any clock, so none of them depends on the receiver's time.
public enum InvalidLineKind: String, Sendable, Hashable, CaseIterable, Codable {
    /// The `tenant` field is absent.
    case missingTenant = "missing_tenant"
    /// The quantity is below zero.
    case negativeQuantity = "negative_quantity"
    /// The quantity is a word, not a number.
    case quantityNotANumber = "quantity_not_a_number"
    /// The timestamp is not RFC 3339 (no zone, a bad separator, epoch seconds, month 13).
    case malformedTimestamp = "malformed_timestamp"
    /// The line is cut off before its closing brace.
    case brokenJSON = "broken_json"
    /// The metric is not a valid name (a space, a leading digit, empty, a slash).
    case badMetricName = "bad_metric_name"
    /// A field the event shape does not have.
    case unknownField = "unknown_field"
}

extension InvalidLineKind {
    /// Breaks `valid`, the JSON line of a valid event, this way. `choice` picks among the
    /// variants of the kind and, for ``brokenJSON``, the cut.
    func corrupt(_ valid: [UInt8], choice: UInt64) -> [UInt8] {
        let line = String(decoding: valid, as: UTF8.self)
        switch self {
        case .missingTenant:
            // `{"tenant":"t0001",...` -> `{...`
            guard let comma = valid.firstIndex(of: UInt8(ascii: ",")) else { return Array("{}".utf8) }
            return [UInt8(ascii: "{")] + valid[(comma + 1)...]
        case .negativeQuantity:
            return Array(line.replacingFirst(",\"quantity\":", with: ",\"quantity\":-").utf8)
        case .quantityNotANumber:
            let words = ["\"lots\"", "\"1,5\"", "true", "\"\""]
            return Array(
                line.replacingValue(of: "quantity", with: words[Int(choice % UInt64(words.count))]).utf8)
        case .malformedTimestamp:
            guard let value = line.value(of: "timestamp") else { return valid }
            let text = String(value.dropFirst().dropLast())  // without the quotes
            let broken: String
            switch choice % 4 {
            case 0: broken = String(text.dropLast())  // no zone
            case 1: broken = text.replacingFirst("T", with: "/")
            case 2: broken = String((try? EventTime(parsing: text))?.seconds ?? 0)  // epoch seconds
            default: broken = String(text.prefix(5)) + "13" + String(text.dropFirst(7))  // month 13
            }
            return Array(line.replacingValue(of: "timestamp", with: "\"" + broken + "\"").utf8)
        case .brokenJSON:
            // Any strict prefix of an object is incomplete JSON; keep at least `{"` so the line is
            // not blank (a blank NDJSON line is skipped, not rejected).
            let keep = 2 + Int(choice % UInt64(max(1, valid.count - 2)))
            return Array(valid[..<min(keep, valid.count - 1)])
        case .badMetricName:
            let names = ["\"api calls\"", "\"9lives\"", "\"\"", "\"bytes/out\""]
            return Array(line.replacingValue(of: "metric", with: names[Int(choice % UInt64(names.count))]).utf8)
        case .unknownField:
            let fields = [",\"units\":1", ",\"user\":\"u1\"", ",\"price\":0.5"]
            return Array(valid.dropLast()) + Array(fields[Int(choice % UInt64(fields.count))].utf8) + [UInt8(ascii: "}")]
        }
    }
}

extension String {
    /// The text with the first occurrence of `target` replaced.
    fileprivate func replacingFirst(_ target: String, with replacement: String) -> String {
        guard let range = firstRange(of: target) else { return self }
        return String(self[..<range.lowerBound]) + replacement + String(self[range.upperBound...])
    }

    /// The raw JSON text of a top-level member's value in one of the workload's own lines (no
    /// nesting before the member, values without commas).
    fileprivate func value(of member: String) -> Substring? {
        guard let key = firstRange(of: "\"" + member + "\":") else { return nil }
        let rest = self[key.upperBound...]
        let end = rest.firstIndex(where: { $0 == "," || $0 == "}" }) ?? rest.endIndex
        return rest[..<end]
    }

    /// The line with a top-level member's value replaced by raw JSON text.
    fileprivate func replacingValue(of member: String, with json: String) -> String {
        guard let key = firstRange(of: "\"" + member + "\":") else { return self }
        let rest = self[key.upperBound...]
        let end = rest.firstIndex(where: { $0 == "," || $0 == "}" }) ?? rest.endIndex
        return String(self[..<key.upperBound]) + json + String(self[end...])
    }
}
