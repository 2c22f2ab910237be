/// A parsed JSON value that keeps numbers as their exact source text.
///
/// Tally reads its own JSON because Foundation's decoders turn every number into a binary
/// `Double`, which would make `0.1` of a unit inexact before any validation could see it.
public enum JSONValue: Sendable, Hashable {
    case object([(key: String, value: JSONValue)])
    case array([JSONValue])
    case string(String)
    /// The number's lexeme as written, e.g. `1e0` or `120000.50`.
    case number(String)
    case bool(Bool)
    case null

    public static func == (lhs: JSONValue, rhs: JSONValue) -> Bool {
        switch (lhs, rhs) {
        case (.object(let a), .object(let b)):
            a.count == b.count && zip(a, b).allSatisfy { $0.key == $1.key && $0.value == $1.value }
        case (.array(let a), .array(let b)): a == b
        case (.string(let a), .string(let b)): a == b
        case (.number(let a), .number(let b)): a == b
        case (.bool(let a), .bool(let b)): a == b
        case (.null, .null): true
        default: false
        }
    }

    public func hash(into hasher: inout Hasher) {
        switch self {
        case .object(let members):
            hasher.combine(0)
            for member in members {
                hasher.combine(member.key)
                hasher.combine(member.value)
            }
        case .array(let values):
            hasher.combine(1)
            hasher.combine(values)
        case .string(let s):
            hasher.combine(2)
            hasher.combine(s)
        case .number(let n):
            hasher.combine(3)
            hasher.combine(n)
        case .bool(let b):
            hasher.combine(4)
            hasher.combine(b)
        case .null: hasher.combine(5)
        }
    }

    /// A short name of the value's kind, for error messages.
    public var kind: String {
        switch self {
        case .object: "an object"
        case .array: "an array"
        case .string: "a string"
        case .number: "a number"
        case .bool: "a boolean"
        case .null: "null"
        }
    }
}

/// Why some bytes are not JSON; `offset` is the byte where reading stopped.
public struct JSONSyntaxError: Error, Sendable, Hashable, CustomStringConvertible {
    public let offset: Int
    public let problem: String
    public var description: String { "malformed JSON at byte \(offset): \(problem)" }
}
