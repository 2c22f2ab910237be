import TallyCore

/// The bytes of one `aggregate_log` row: a batch's hourly aggregate cells, exact and cheap to
/// write and read back, through the core's byte codec. Big-endian throughout:
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
        out.appendBigEndian(UInt64(cells.count), bytes: 4)
        for (key, aggregate) in cells.cells {
            out.appendString32(key.tenant)
            out.appendString32(key.metric)
            out.appendString32(key.dimension)
            out.appendString32(key.value)
            out.appendString32(key.billedIn?.description ?? "")
            out.appendBigEndian(UInt64(bitPattern: key.hour), bytes: 8)
            out.appendBigEndian(aggregate.sum.nanos)
            out.appendBigEndian(UInt64(bitPattern: aggregate.count), bytes: 8)
            out.appendBigEndian(aggregate.max.nanos)
            out.appendBigEndian(UInt64(bitPattern: aggregate.latest.timestamp.microseconds), bytes: 8)
            out.appendBigEndian(aggregate.latest.fingerprint.high, bytes: 8)
            out.appendBigEndian(aggregate.latest.fingerprint.low, bytes: 8)
            out.appendBigEndian(aggregate.latest.quantity.nanos)
        }
        return out
    }

    static func decode(_ bytes: [UInt8], into cells: inout AggregateCells) throws(LedgerError) {
        try bytes.withUnsafeBytes { raw in Result { () throws(LedgerError) in try decode(raw, into: &cells) } }.get()
    }

    static func decode(_ bytes: UnsafeRawBufferPointer, into cells: inout AggregateCells) throws(LedgerError) {
        var reader = Reader(reader: ByteReader(bytes))
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
        guard reader.reader.remaining == 0 else { throw .corruptRow("aggregate log row has \(reader.reader.remaining) trailing bytes") }
    }

    /// The core's ``ByteReader``, saying what is wrong.
    private struct Reader {
        var reader: ByteReader

        mutating func integer(_ width: Int) throws(LedgerError) -> UInt64 {
            guard let value = reader.bigEndian(bytes: width) else { throw .corruptRow("aggregate log row is truncated") }
            return value
        }

        mutating func int128() throws(LedgerError) -> Int128 {
            guard let value = reader.bigEndianInt128() else { throw .corruptRow("aggregate log row is truncated") }
            return value
        }

        mutating func string() throws(LedgerError) -> String {
            let count = Int(try integer(4))
            guard let bytes = reader.slice(count: count) else { throw .corruptRow("aggregate log row is truncated") }
            return String(decoding: bytes, as: UTF8.self)
        }
    }
}
