import TallyCore

/// The bytes of one `aggregate_log` row: a batch's hourly aggregate cells, exact and cheap to
/// write and read back. Big-endian throughout:
///
///     u32 cell count, then per cell:
///       tenant, metric, dimension, value, billed_in   (u32 byte length + UTF-8 each; billed_in "" = none)
///       i64 hour, i128 sum nanos, i64 count, i128 max nanos,
///       i64 latest timestamp µs, u64 + u64 latest fingerprint, i128 latest quantity nanos
///
/// A row that does not decode is reported as ``LedgerError/corruptRow(_:)``, never guessed at.
enum AggregateLogCodec {
    static func encode(_ cells: AggregateCells) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(cells.count * 120)
        append(UInt64(cells.count), bytes: 4, to: &out)
        for (key, aggregate) in cells.cells {
            append(key.tenant, to: &out)
            append(key.metric, to: &out)
            append(key.dimension, to: &out)
            append(key.value, to: &out)
            append(key.billedIn?.description ?? "", to: &out)
            append(UInt64(bitPattern: key.hour), bytes: 8, to: &out)
            append(aggregate.sum.nanos, to: &out)
            append(UInt64(bitPattern: aggregate.count), bytes: 8, to: &out)
            append(aggregate.max.nanos, to: &out)
            append(UInt64(bitPattern: aggregate.latest.timestamp.microseconds), bytes: 8, to: &out)
            append(aggregate.latest.fingerprint.high, bytes: 8, to: &out)
            append(aggregate.latest.fingerprint.low, bytes: 8, to: &out)
            append(aggregate.latest.quantity.nanos, to: &out)
        }
        return out
    }

    static func decode(_ bytes: [UInt8], into cells: inout AggregateCells) throws(LedgerError) {
        var reader = Reader(bytes: bytes)
        let count = try reader.integer(4)
        for _ in 0..<count {
            let tenant = try reader.string()
            let metric = try reader.string()
            let dimension = try reader.string()
            let value = try reader.string()
            let billedText = try reader.string()
            var billedIn: BillingPeriod?
            if !billedText.isEmpty {
                guard let period = BillingPeriod(billedText) else { throw .corruptRow("aggregate log billed_in '\(billedText)'") }
                billedIn = period
            }
            let hour = Int64(bitPattern: try reader.integer(8))
            let sum = Quantity(nanos: try reader.int128())
            let eventCount = Int64(bitPattern: try reader.integer(8))
            let max = Quantity(nanos: try reader.int128())
            let latestTime = EventTime(microseconds: Int64(bitPattern: try reader.integer(8)))
            let fingerprint = Fingerprint(high: try reader.integer(8), low: try reader.integer(8))
            let latest = Quantity(nanos: try reader.int128())
            try cells.add(
                UsageAggregate(
                    sum: sum, count: eventCount, max: max,
                    latest: LatestValue(timestamp: latestTime, fingerprint: fingerprint, quantity: latest)),
                at: AggregateCellKey(tenant: tenant, metric: metric, hour: hour, dimension: dimension, value: value, billedIn: billedIn))
        }
        guard reader.offset == bytes.count else { throw .corruptRow("aggregate log row has \(bytes.count - reader.offset) trailing bytes") }
    }

    private static func append(_ value: UInt64, bytes: Int, to out: inout [UInt8]) {
        for shift in stride(from: (bytes - 1) * 8, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: value >> UInt64(shift))) }
    }

    private static func append(_ value: Int128, to out: inout [UInt8]) {
        let bits = UInt128(bitPattern: value)
        append(UInt64(truncatingIfNeeded: bits >> 64), bytes: 8, to: &out)
        append(UInt64(truncatingIfNeeded: bits), bytes: 8, to: &out)
    }

    private static func append(_ text: String, to out: inout [UInt8]) {
        append(UInt64(text.utf8.count), bytes: 4, to: &out)
        out.append(contentsOf: text.utf8)
    }

    private struct Reader {
        let bytes: [UInt8]
        var offset = 0

        mutating func integer(_ width: Int) throws(LedgerError) -> UInt64 {
            guard offset + width <= bytes.count else { throw .corruptRow("aggregate log row is truncated") }
            var value: UInt64 = 0
            for index in offset..<(offset + width) { value = value << 8 | UInt64(bytes[index]) }
            offset += width
            return value
        }

        mutating func int128() throws(LedgerError) -> Int128 {
            let high = try integer(8)
            let low = try integer(8)
            return Int128(bitPattern: UInt128(high) << 64 | UInt128(low))
        }

        mutating func string() throws(LedgerError) -> String {
            let count = Int(try integer(4))
            guard offset + count <= bytes.count else { throw .corruptRow("aggregate log row is truncated") }
            defer { offset += count }
            return String(decoding: bytes[offset..<(offset + count)], as: UTF8.self)
        }
    }
}
