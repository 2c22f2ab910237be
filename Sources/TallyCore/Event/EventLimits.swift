/// The bounds every event must respect. Defaults suit API metering; collectors and agents take
/// them from config.
public struct EventLimits: Sendable, Hashable {
    public var maxTenantBytes = 128
    public var maxMetricBytes = 64
    public var maxIdBytes = 128
    public var maxProperties = 32
    public var maxPropertyKeyBytes = 64
    public var maxPropertyValueBytes = 256
    /// The largest quantity of one event: 10¹⁵ units. Sums of many events stay far inside
    /// ``Quantity``'s 128-bit range, and every sum is checked anyway.
    public var maxQuantity = Quantity(nanos: 1_000_000_000_000_000 * Quantity.nanosPerUnit)
    /// How far in the future an event's timestamp may be, to allow for clock skew.
    public var maxFutureSkew: Duration = .seconds(300)

    public init() {}

    public static let standard = EventLimits()
}

extension UsageEvent {
    /// Checks every field against `limits`, the timestamp against ``EventTime/acceptedRange``
    /// and against `now` plus the allowed future skew. The first problem found is thrown.
    public func validate(limits: EventLimits = .standard, now: EventTime) throws(EventRejection) {
        try Self.checkText(tenant, field: "tenant", max: limits.maxTenantBytes)
        try Self.checkName(metric, field: "metric", max: limits.maxMetricBytes)
        if let id { try Self.checkText(id, field: "id", max: limits.maxIdBytes) }
        if quantity.nanos < 0 {
            throw EventRejection(.invalidField, field: "quantity", "must not be negative (got \(quantity))")
        }
        if quantity > limits.maxQuantity {
            throw EventRejection(.limitExceeded, field: "quantity", "\(quantity) exceeds the limit of \(limits.maxQuantity)")
        }
        if properties.count > limits.maxProperties {
            throw EventRejection(
                .limitExceeded, field: "properties", "\(properties.count) properties exceed the limit of \(limits.maxProperties)")
        }
        for property in properties {
            try Self.checkName(property.key, field: "properties.\(property.key)", max: limits.maxPropertyKeyBytes)
            if property.value.utf8.count > limits.maxPropertyValueBytes {
                throw EventRejection(
                    .limitExceeded, field: "properties.\(property.key)",
                    "value is \(property.value.utf8.count) bytes; the limit is \(limits.maxPropertyValueBytes)")
            }
            if Self.hasControlCharacter(property.value) {
                throw EventRejection(.invalidField, field: "properties.\(property.key)", "contains a control character")
            }
        }
        if !EventTime.acceptedRange.contains(timestamp) {
            throw EventRejection(
                .invalidField, field: "timestamp",
                "\(timestamp) is outside the accepted range \(EventTime.acceptedRange.lowerBound) to \(EventTime.acceptedRange.upperBound)")
        }
        if let future = EventRejection.future(timestamp, now: now, skew: limits.maxFutureSkew) { throw future }
    }

    /// Non-empty UTF-8 text with no control characters, at most `max` bytes.
    static func checkText(_ value: String, field: @autoclosure () -> String, max: Int) throws(EventRejection) {
        if value.isEmpty { throw EventRejection(.invalidField, field: field(), "must not be empty") }
        if value.utf8.count > max {
            throw EventRejection(.limitExceeded, field: field(), "is \(value.utf8.count) bytes; the limit is \(max)")
        }
        if hasControlCharacter(value) {
            throw EventRejection(.invalidField, field: field(), "contains a control character")
        }
    }

    /// A name: an ASCII letter, then letters, digits, `_`, `.`, `:` or `-`; at most `max` bytes.
    static func checkName(_ value: String, field: @autoclosure () -> String, max: Int) throws(EventRejection) {
        if value.isEmpty { throw EventRejection(.invalidField, field: field(), "must not be empty") }
        if value.utf8.count > max {
            throw EventRejection(.limitExceeded, field: field(), "is \(value.utf8.count) bytes; the limit is \(max)")
        }
        var first = true
        for byte in value.utf8 {
            if !isNameByte(byte, first: first) {
                throw EventRejection(
                    .invalidField, field: field(),
                    "'\(value)' is not a valid name (a letter, then letters, digits, '_', '.', ':' or '-')")
            }
            first = false
        }
    }

    /// Whether `byte` may stand in a name (``checkName(_:field:max:)``): an ASCII letter, and
    /// after the first byte also a digit, `_`, `.`, `:` or `-`.
    static func isNameByte(_ byte: UInt8, first: Bool) -> Bool {
        let letter = (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
        return letter || (!first && ((byte >= 0x30 && byte <= 0x39) || byte == 0x5F || byte == 0x2E || byte == 0x3A || byte == 0x2D))
    }

    /// True when `value` holds a C0 control character or DEL. In UTF-8 those scalars are exactly
    /// the bytes below 0x20 and 0x7F (every byte of a longer sequence is 0x80 or above).
    static func hasControlCharacter(_ value: String) -> Bool {
        var utf8 = value
        return utf8.withUTF8 { bytes in bytes.contains(where: { $0 < 0x20 || $0 == 0x7F }) }
    }
}

extension EventRejection {
    /// The one future-timestamp rule (SPEC §6), with its one message: an event timestamped more
    /// than `skew` after `now` — the time the agent or the collector took it — is refused; exactly
    /// `now + skew` is accepted. Used by the agent's ingest, the collector's validation and the
    /// ledger's rules (``LateWindow/classify(_:now:)`` draws the same line).
    public static func future(_ timestamp: EventTime, now: EventTime, skew: Duration) -> EventRejection? {
        let latest = now.advanced(by: skew)
        guard timestamp > latest else { return nil }
        return EventRejection(
            .futureTimestamp, field: "timestamp",
            "\(timestamp) is after \(latest): more than \(DurationText.format(skew)) ahead of the time it arrived (the allowed clock skew)")
    }
}
