/// The stable reason codes for an event that is not billed. They appear in agent answers, in
/// wire acks and in the ledger, so their raw values never change.
public enum RejectionReason: String, Sendable, Hashable, CaseIterable, Codable {
    /// Not JSON, or not a JSON object.
    case malformed
    /// A required field is absent.
    case missingField = "missing_field"
    /// A field has the wrong type or an invalid value.
    case invalidField = "invalid_field"
    /// A field that the event shape does not have.
    case unknownField = "unknown_field"
    /// A length, count or range limit was exceeded.
    case limitExceeded = "limit_exceeded"
    /// The timestamp is further in the future than the allowed clock skew.
    case futureTimestamp = "future_timestamp"
    /// The timestamp is older than the late-arrival limit.
    case tooOld = "too_old"
    /// The event's billing period is closed and the late policy is `reject`.
    case late
}

/// An event refused, with the field at fault and a message a person can act on.
public struct EventRejection: Error, Sendable, Hashable, CustomStringConvertible {
    public let reason: RejectionReason
    /// The JSON field at fault, when one is (`quantity`, `properties.region`).
    public let field: String?
    public let message: String

    public init(_ reason: RejectionReason, field: String?, _ message: String) {
        self.reason = reason
        self.field = field
        self.message = message
    }

    public var description: String {
        field.map { "\(reason.rawValue): \($0): \(message)" } ?? "\(reason.rawValue): \(message)"
    }
}
