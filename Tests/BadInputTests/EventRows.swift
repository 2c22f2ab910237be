import Testing
import TallyCore

/// What one line must come to: accepted (a boundary that is still valid), or rejected with this
/// reason, field and message (`*` in the message stands for the current time).
enum EventExpectation: Sendable, Hashable {
    case accepted
    case rejected(RejectionReason, field: String?, message: String)
}

/// One row of the event table: a line as the caller sends it, and what the agent answers.
struct EventRow: Sendable, CustomTestStringConvertible {
    let name: String
    let line: [UInt8]
    let expected: EventExpectation
    /// Rows whose verdict depends on a fixed "now" run through the decoder only.
    let throughAgent: Bool

    init(_ name: String, _ line: String, _ expected: EventExpectation, throughAgent: Bool = true) {
        self.init(name, Array(line.utf8), expected, throughAgent: throughAgent)
    }

    init(_ name: String, _ line: [UInt8], _ expected: EventExpectation, throughAgent: Bool = true) {
        self.name = name
        self.line = line
        self.expected = expected
        self.throughAgent = throughAgent
    }

    var testDescription: String { name }
}

/// The event table: every field, every limit (SPEC §6 "Per-event rules"; `EventLimits`).
enum EventRows {
    /// The time the decoder-only rows are judged at.
    static let now = EventTime(microseconds: 1_768_478_400_000_000)  // 2026-01-15T12:00:00Z

    /// A valid event line with some fields replaced (raw JSON text) or removed (nil), and extra
    /// members appended in order.
    static func line(_ changes: [(String, String?)] = [], extra: String = "") -> String {
        var fields: [(String, String)] = [
            ("tenant", #""acme""#), ("metric", #""api_calls""#), ("quantity", "1"), ("timestamp", #""2026-01-15T10:00:00Z""#),
            ("id", #""bad-1""#),
        ]
        for (key, value) in changes {
            if let index = fields.firstIndex(where: { $0.0 == key }) {
                if let value { fields[index].1 = value } else { fields.remove(at: index) }
            } else if let value {
                fields.append((key, value))
            }
        }
        let members = fields.map { "\"\($0.0)\":\($0.1)" } + (extra.isEmpty ? [] : [extra])
        return "{" + members.joined(separator: ",") + "}"
    }

    static func quoted(_ text: String) -> String { "\"" + text + "\"" }

    static func rejected(_ reason: RejectionReason, _ field: String?, _ message: String) -> EventExpectation {
        .rejected(reason, field: field, message: message)
    }

    static let nameRule = "is not a valid name (a letter, then letters, digits, '_', '.', ':' or '-')"
    static let tallyFields = "expected id, metric, properties, quantity, tenant, timestamp"
    static let range = "the accepted range 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z"

    /// Bytes of a valid line with `bytes` in place of the tenant's text.
    static func tenantBytes(_ bytes: [UInt8]) -> [UInt8] {
        Array(#"{"tenant":""#.utf8) + bytes + Array(#"","metric":"api_calls","quantity":1,"timestamp":"2026-01-15T10:00:00Z"}"#.utf8)
    }

    static let properties33 = "{" + (0..<33).map { "\"p\($0)\":\"v\"" }.joined(separator: ",") + "}"
    static let properties32 = "{" + (0..<32).map { "\"p\($0)\":\"v\"" }.joined(separator: ",") + "}"

    static let rows: [EventRow] = [
        // The line as a whole: JSON syntax, shape, nesting, UTF-8.
        EventRow("not JSON", "{not json}", rejected(.malformed, nil, "malformed JSON at byte 1: expected a string key")),
        EventRow("trailing comma", #"{"tenant":"acme",}"#, rejected(.malformed, nil, "malformed JSON at byte 17: expected a string key")),
        EventRow(
            "cut short", #"{"tenant":"acme","metric":"api_calls""#,
            rejected(.malformed, nil, "malformed JSON at byte 37: unexpected end of input in an object")),
        EventRow(
            "content after the object", line() + " x", rejected(.malformed, nil, "malformed JSON at byte 100: unexpected content after the value")),
        EventRow("a string, not an object", #""acme""#, rejected(.malformed, nil, "an event must be a JSON object, not a string")),
        EventRow("null, not an object", "null", rejected(.malformed, nil, "an event must be a JSON object, not null")),
        EventRow("an array inside a line", "[" + line() + "]", rejected(.malformed, nil, "an event must be a JSON object, not an array")),
        EventRow(
            "nesting deeper than 32",
            line([("id", nil), ("properties", #"{"deep":"# + String(repeating: "[", count: 31) + String(repeating: "]", count: 31) + "}")]),
            rejected(.malformed, nil, "malformed JSON at byte 137: nesting deeper than 32")),
        EventRow(
            "invalid UTF-8", tenantBytes([0x61, 0xFF, 0x62]), rejected(.malformed, nil, "malformed JSON at byte 11: invalid UTF-8 in a string")),
        EventRow("overlong UTF-8", tenantBytes([0xC0, 0xAF]), rejected(.malformed, nil, "malformed JSON at byte 11: invalid UTF-8 in a string")),
        EventRow(
            "raw tab in a string", tenantBytes([0x61, 0x09, 0x62]),
            rejected(.malformed, nil, "malformed JSON at byte 12: unescaped control character in a string")),
        EventRow("lone surrogate", line([("tenant", #""ac\ud800me""#)]), rejected(.malformed, nil, "malformed JSON at byte 19: lone high surrogate")),
        EventRow("invalid escape", line([("tenant", #""ac\xme""#)]), rejected(.malformed, nil, "malformed JSON at byte 15: invalid escape '\\x'")),
        EventRow(
            "number with a leading zero", line([("quantity", "01")]), rejected(.malformed, nil, "malformed JSON at byte 51: leading zero in a number")
        ),

        // Members.
        EventRow(
            "a field twice", line(extra: #""tenant":"other""#),
            rejected(.invalidField, "tenant", "appears more than once")),
        EventRow(
            "an unknown field", line([("colour", #""red""#)]),
            rejected(.unknownField, "colour", "is not an event field (\(tallyFields))")),
        EventRow(
            "a seed field in a Tally event", line([("user_id", #""acme""#)]),
            rejected(.unknownField, "user_id", "is not an event field (\(tallyFields))")),
        EventRow(
            "a Tally field in a seed event", #"{"user_id":"acme","units":1,"quantity":1,"metric":"api_calls","timestamp":"2026-01-15T10:00:00Z"}"#,
            rejected(.unknownField, "quantity", "is not an event field (expected endpoint, id, metric, properties, timestamp, units, user_id)")),
        EventRow(
            "a seed endpoint twice",
            #"{"user_id":"acme","units":1,"metric":"api_calls","endpoint":"/a","properties":{"endpoint":"/b"},"timestamp":"2026-01-15T10:00:00Z"}"#,
            rejected(.invalidField, "endpoint", "is given both as a field and as a property")),

        // tenant: 1-128 bytes of UTF-8, no control character.
        EventRow("tenant missing", line([("tenant", nil)]), rejected(.missingField, "tenant", "is required")),
        EventRow("tenant null", line([("tenant", "null")]), rejected(.missingField, "tenant", "is required")),
        EventRow("tenant a number", line([("tenant", "7")]), rejected(.invalidField, "tenant", "must be a string, not a number")),
        EventRow("tenant empty", line([("tenant", #""""#)]), rejected(.invalidField, "tenant", "must not be empty")),
        EventRow("tenant 128 bytes", line([("tenant", quoted(String(repeating: "t", count: 128)))]), .accepted),
        EventRow(
            "tenant 129 bytes", line([("tenant", quoted(String(repeating: "t", count: 129)))]),
            rejected(.limitExceeded, "tenant", "is 129 bytes; the limit is 128")),
        EventRow(
            "tenant 129 bytes of multi-byte UTF-8", line([("tenant", quoted(String(repeating: "é", count: 64) + "t"))]),
            rejected(.limitExceeded, "tenant", "is 129 bytes; the limit is 128")),
        EventRow(
            "tenant with a control character", line([("tenant", #""ac\u0007me""#)]), rejected(.invalidField, "tenant", "contains a control character")
        ),
        EventRow("tenant with DEL", line([("tenant", #""ac\u007fme""#)]), rejected(.invalidField, "tenant", "contains a control character")),

        // metric: a name of 1-64 bytes.
        EventRow("metric missing", line([("metric", nil)]), rejected(.missingField, "metric", "is required (this agent has no default metric)")),
        EventRow("metric a boolean", line([("metric", "true")]), rejected(.invalidField, "metric", "must be a string, not a boolean")),
        EventRow("metric empty", line([("metric", #""""#)]), rejected(.invalidField, "metric", "must not be empty")),
        EventRow("metric 64 bytes", line([("metric", quoted("m" + String(repeating: "x", count: 63)))]), .accepted),
        EventRow(
            "metric 65 bytes", line([("metric", quoted("m" + String(repeating: "x", count: 64)))]),
            rejected(.limitExceeded, "metric", "is 65 bytes; the limit is 64")),
        EventRow("metric starting with a digit", line([("metric", #""1calls""#)]), rejected(.invalidField, "metric", "'1calls' \(nameRule)")),
        EventRow("metric with a space", line([("metric", #""api calls""#)]), rejected(.invalidField, "metric", "'api calls' \(nameRule)")),

        // quantity: 0 ≤ q ≤ 10^15, nine decimal places.
        EventRow("quantity missing", line([("quantity", nil)]), rejected(.missingField, "quantity", "is required")),
        EventRow("quantity a boolean", line([("quantity", "true")]), rejected(.invalidField, "quantity", "must be a number, not a boolean")),
        EventRow("quantity an object", line([("quantity", "{}")]), rejected(.invalidField, "quantity", "must be a number, not an object")),
        EventRow("quantity not a number", line([("quantity", #""abc""#)]), rejected(.invalidField, "quantity", "'abc' is not a decimal number")),
        EventRow("quantity NaN", line([("quantity", #""NaN""#)]), rejected(.invalidField, "quantity", "'NaN' is not a decimal number")),
        EventRow("quantity negative", line([("quantity", "-1")]), rejected(.invalidField, "quantity", "must not be negative (got -1)")),
        EventRow("quantity 9 decimal places", line([("quantity", "0.000000001")]), .accepted),
        EventRow(
            "quantity 10 decimal places", line([("quantity", "0.0000000001")]),
            rejected(.invalidField, "quantity", "'0.0000000001' has more than 9 decimal places")),
        EventRow("quantity at the limit", line([("quantity", "1e15")]), .accepted),
        EventRow(
            "quantity over the limit", line([("quantity", "1000000000000000.000000001")]),
            rejected(.limitExceeded, "quantity", "1000000000000000.000000001 exceeds the limit of 1000000000000000")),
        EventRow("quantity out of range", line([("quantity", "1e40")]), rejected(.limitExceeded, "quantity", "'1e40' is out of range")),

        // timestamp: RFC 3339, in the accepted range, not too far ahead.
        EventRow("timestamp missing", line([("timestamp", nil)]), rejected(.missingField, "timestamp", "is required")),
        EventRow("timestamp a number", line([("timestamp", "1768471200")]), rejected(.invalidField, "timestamp", "must be a string, not a number")),
        EventRow(
            "timestamp not a time", line([("timestamp", #""yesterday""#)]),
            rejected(.invalidField, "timestamp", "'yesterday' is not an RFC 3339 timestamp: too short; expected e.g. 2026-04-13T12:00:00Z")),
        EventRow(
            "timestamp without a zone", line([("timestamp", #""2026-01-15T10:00:00""#)]),
            rejected(.invalidField, "timestamp", "'2026-01-15T10:00:00' is not an RFC 3339 timestamp: a time zone (Z or ±HH:MM) is required")),
        EventRow(
            "timestamp month 13", line([("timestamp", #""2026-13-15T10:00:00Z""#)]),
            rejected(.invalidField, "timestamp", "'2026-13-15T10:00:00Z' is not an RFC 3339 timestamp: month 13 is out of range")),
        EventRow(
            "timestamp February 30", line([("timestamp", #""2026-02-30T10:00:00Z""#)]),
            rejected(.invalidField, "timestamp", "'2026-02-30T10:00:00Z' is not an RFC 3339 timestamp: day 30 is out of range")),
        EventRow(
            "timestamp hour 24", line([("timestamp", #""2026-01-15T24:00:00Z""#)]),
            rejected(.invalidField, "timestamp", "'2026-01-15T24:00:00Z' is not an RFC 3339 timestamp: time of day is out of range")),
        EventRow(
            "timestamp nanoseconds", line([("timestamp", #""2026-01-15T10:00:00.1234567Z""#)]),
            rejected(.invalidField, "timestamp", "'2026-01-15T10:00:00.1234567Z' is not an RFC 3339 timestamp: sub-microsecond precision is not kept")
        ),
        EventRow("timestamp trailing zero nanoseconds", line([("timestamp", #""2026-01-15T10:00:00.123456000Z""#)]), .accepted),
        EventRow(
            "timestamp offset +25:00", line([("timestamp", #""2026-01-15T10:00:00+25:00""#)]),
            rejected(.invalidField, "timestamp", "'2026-01-15T10:00:00+25:00' is not an RFC 3339 timestamp: the offset must be Z or ±HH:MM")),
        EventRow(
            "timestamp in year 0", line([("timestamp", #""0000-12-31T23:59:59Z""#)]),
            rejected(.invalidField, "timestamp", "0000-12-31T23:59:59Z is outside \(range)")),
        EventRow("timestamp at the first accepted instant", line([("timestamp", #""0001-01-01T00:00:00Z""#)]), .accepted),
        EventRow(
            "timestamp after 9999 by its offset", line([("timestamp", #""9999-12-31T23:30:00-01:00""#)]),
            rejected(.invalidField, "timestamp", "10000-01-01T00:30:00Z is outside \(range)")),
        EventRow(
            "timestamp in the future", line([("timestamp", #""9000-01-01T00:00:00Z""#)]),
            rejected(
                .futureTimestamp, "timestamp", "9000-01-01T00:00:00Z is after *: more than 5m ahead of the time it arrived (the allowed clock skew)")),
        EventRow(
            "timestamp just past the skew", line([("timestamp", #""2026-01-15T12:05:00.000001Z""#)]),
            rejected(
                .futureTimestamp, "timestamp",
                "2026-01-15T12:05:00.000001Z is after 2026-01-15T12:05:00Z: more than 5m ahead of the time it arrived (the allowed clock skew)"),
            throughAgent: false),
        EventRow("timestamp exactly at the skew", line([("timestamp", #""2026-01-15T12:05:00Z""#)]), .accepted, throughAgent: false),

        // id: absent, or 1-128 bytes of UTF-8 with no control character.
        EventRow("id null (absent)", line([("id", "null")]), .accepted),
        EventRow("id empty", line([("id", #""""#)]), rejected(.invalidField, "id", "must not be empty")),
        EventRow("id a number", line([("id", "42")]), rejected(.invalidField, "id", "must be a string, not a number")),
        EventRow("id 128 bytes", line([("id", quoted(String(repeating: "i", count: 128)))]), .accepted),
        EventRow(
            "id 129 bytes", line([("id", quoted(String(repeating: "i", count: 129)))]),
            rejected(.limitExceeded, "id", "is 129 bytes; the limit is 128")),
        EventRow("id with a newline", line([("id", #""req\n1""#)]), rejected(.invalidField, "id", "contains a control character")),

        // properties: at most 32; keys are names of 1-64 bytes; values text of 0-256 bytes.
        EventRow("properties an array", line([("properties", "[]")]), rejected(.invalidField, "properties", "must be an object, not an array")),
        EventRow("properties 32", line([("properties", properties32)]), .accepted),
        EventRow(
            "properties 33", line([("properties", properties33)]), rejected(.limitExceeded, "properties", "33 properties exceed the limit of 32")),
        EventRow(
            "property key twice", line([("properties", #"{"region":"eu","region":"us"}"#)]),
            rejected(.invalidField, "properties.region", "appears more than once")),
        EventRow("property key empty", line([("properties", #"{"":"x"}"#)]), rejected(.invalidField, "properties.", "must not be empty")),
        EventRow(
            "property key not a name", line([("properties", #"{"1x":"x"}"#)]),
            rejected(.invalidField, "properties.1x", "'1x' \(nameRule)")),
        EventRow(
            "property key 65 bytes", line([("properties", "{" + quoted("k" + String(repeating: "x", count: 64)) + #":"v"}"#)]),
            rejected(.limitExceeded, "properties.k" + String(repeating: "x", count: 64), "is 65 bytes; the limit is 64")),
        EventRow("property value 256 bytes", line([("properties", #"{"region":"# + quoted(String(repeating: "v", count: 256)) + "}")]), .accepted),
        EventRow(
            "property value 257 bytes", line([("properties", #"{"region":"# + quoted(String(repeating: "v", count: 257)) + "}")]),
            rejected(.limitExceeded, "properties.region", "value is 257 bytes; the limit is 256")),
        EventRow(
            "property value with a control character", line([("properties", #"{"region":"e\u0000u"}"#)]),
            rejected(.invalidField, "properties.region", "contains a control character")),
        EventRow(
            "property value an object", line([("properties", #"{"region":{}}"#)]),
            rejected(.invalidField, "properties.region", "must be a string, number or boolean, not an object")),
        EventRow(
            "property value null", line([("properties", #"{"region":null}"#)]),
            rejected(.invalidField, "properties.region", "must be a string, number or boolean, not null")),
        EventRow(
            "property value an inexact number", line([("properties", #"{"ratio":0.0000000001}"#)]),
            rejected(.invalidField, "properties.ratio", "number '0.0000000001' cannot be kept exactly; send it as a string")),
    ]
}
