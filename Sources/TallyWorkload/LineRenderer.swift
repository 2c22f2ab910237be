import TallyCore

/// Writes an ``EventDraft`` as the exact bytes of `UsageEvent.jsonLine`, without building the
/// event or any string: pieces are precomputed with the core's own JSON quoting, numbers and
/// timestamps are written digit by digit, and the date-time text is cached per second.
/// The workload tests check the equality with `jsonLine` on every generated line.
struct LineRenderer {
    private static func quoted(_ text: String) -> [UInt8] { Array(JSONWriter.quoted(text).utf8) }

    private static let tenantPrefix = Array("{\"tenant\":".utf8)
    private static let metricPrefix = Array(",\"metric\":".utf8)
    private static let quantityPrefix = Array(",\"quantity\":".utf8)
    private static let timestampPrefix = Array(",\"timestamp\":\"".utf8)
    private static let idPrefix = Array("\",\"id\":\"".utf8)
    private static let endpointPrefix = Array("\",\"properties\":{\"endpoint\":".utf8)
    private static let methodPrefix = Array(",\"method\":".utf8)
    private static let regionPrefix = Array(",\"region\":".utf8)
    private static let statusPrefix = Array(",\"status\":".utf8)
    private static let ending = Array("}}".utf8)

    private static let tenants = WorkloadCatalog.tenants.map(quoted)
    private static let metrics = WorkloadCatalog.metrics.map(quoted)
    private static let endpoints = WorkloadCatalog.endpoints.map(quoted)
    private static let methods = WorkloadCatalog.methods.map(quoted)
    private static let regions = WorkloadCatalog.regions.map(quoted)
    private static let statuses = WorkloadCatalog.statuses.map(quoted)
    private static let hexDigits = Array("0123456789abcdef".utf8)

    /// The second whose `YYYY-MM-DDTHH:MM:SS` text is in `cachedText`.
    private var cachedSecond: Int64 = .min
    private var cachedText: [UInt8] = []

    /// Appends the event's JSON line (no newline).
    mutating func append(_ draft: EventDraft, to out: inout [UInt8]) {
        out.append(contentsOf: Self.tenantPrefix)
        out.append(contentsOf: Self.tenants[draft.tenant])
        out.append(contentsOf: Self.metricPrefix)
        out.append(contentsOf: Self.metrics[draft.metric.rawValue])
        out.append(contentsOf: Self.quantityPrefix)
        Self.appendThousandths(draft.thousandths, to: &out)
        out.append(contentsOf: Self.timestampPrefix)
        appendTimestamp(draft.timestamp, to: &out)
        out.append(contentsOf: Self.idPrefix)
        Self.appendUUID(high: draft.uuidHigh, low: draft.uuidLow, to: &out)
        out.append(contentsOf: Self.endpointPrefix)
        out.append(contentsOf: Self.endpoints[Int(draft.endpoint)])
        out.append(contentsOf: Self.methodPrefix)
        out.append(contentsOf: Self.methods[Int(draft.method)])
        out.append(contentsOf: Self.regionPrefix)
        out.append(contentsOf: Self.regions[Int(draft.region)])
        out.append(contentsOf: Self.statusPrefix)
        out.append(contentsOf: Self.statuses[Int(draft.status)])
        out.append(contentsOf: Self.ending)
    }

    /// `Quantity.description` of a non-negative number of thousandths.
    static func appendThousandths(_ value: Int64, to out: inout [UInt8]) {
        appendDecimal(value / 1_000, to: &out)
        var fraction = value % 1_000
        guard fraction != 0 else { return }
        var digits = 3
        while fraction % 10 == 0 {
            fraction /= 10
            digits -= 1
        }
        out.append(UInt8(ascii: "."))
        var divisor: Int64 = 1
        for _ in 1..<digits { divisor *= 10 }
        while divisor > 0 {
            out.append(UInt8(truncatingIfNeeded: 0x30 + (fraction / divisor) % 10))
            divisor /= 10
        }
    }

    /// A non-negative integer in decimal.
    static func appendDecimal(_ value: Int64, to out: inout [UInt8]) {
        var divisor: Int64 = 1
        while divisor <= value / 10 { divisor *= 10 }
        while divisor > 0 {
            out.append(UInt8(truncatingIfNeeded: 0x30 + (value / divisor) % 10))
            divisor /= 10
        }
    }

    /// `EventTime.description`: the cached date-time text, then `.ffffff` unless the fraction is
    /// zero, then `Z`.
    mutating func appendTimestamp(_ microseconds: Int64, to out: inout [UInt8]) {
        let time = EventTime(microseconds: microseconds)
        let second = time.seconds
        if second != cachedSecond {
            cachedSecond = second
            cachedText = Array(CivilTime(epochSeconds: second).description.utf8)
        }
        out.append(contentsOf: cachedText)
        let micros = microseconds - second * 1_000_000
        if micros != 0 {
            out.append(UInt8(ascii: "."))
            var divisor: Int64 = 100_000
            while divisor > 0 {
                out.append(UInt8(truncatingIfNeeded: 0x30 + (micros / divisor) % 10))
                divisor /= 10
            }
        }
        out.append(UInt8(ascii: "Z"))
    }

    /// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` in lowercase hex.
    static func appendUUID(high: UInt64, low: UInt64, to out: inout [UInt8]) {
        for nibble in 0..<32 {
            if nibble == 8 || nibble == 12 || nibble == 16 || nibble == 20 { out.append(UInt8(ascii: "-")) }
            let word = nibble < 16 ? high : low
            let shift = UInt64(60 - 4 * (nibble % 16))
            out.append(hexDigits[Int((word >> shift) & 0xF)])
        }
    }
}
