import TallyCore

/// Reading rows back, in every layout ever written (the format is at the top of
/// `AggregateLogCodec.swift`); a row that does not decode is a corrupt row, never guessed at.
extension AggregateLogCodec {
    package static func decode(_ bytes: [UInt8], into cells: inout AggregateCells) throws(LedgerError) {
        try bytes.withUnsafeBytes { raw in Result { () throws(LedgerError) in try decode(raw, into: &cells) } }.get()
    }

    package static func decode(_ bytes: UnsafeRawBufferPointer, into cells: inout AggregateCells) throws(LedgerError) {
        try decode(bytes, tenant: nil) { (key, aggregate) throws(LedgerError) in try cells.add(aggregate, at: key) }
    }

    /// Hands each cell of `tenant` (every cell if nil) in a row to `body`. In the sectioned
    /// layout the other tenants' cells are skipped without being read.
    package static func decode(
        _ bytes: UnsafeRawBufferPointer, tenant: String?, _ body: (AggregateCellKey, UsageAggregate) throws(LedgerError) -> Void
    ) throws(LedgerError) {
        var reader = Reader(reader: ByteReader(bytes))
        let first = try reader.integer(4)
        guard first == marker || first == markerWithMinimum || first == markerWithLevels || first == markerCompact else {
            // A flat layout: every cell names its tenant.
            switch first {
            case flatMarkerWithMinimum: reader.fields = .minimum
            case flatMarkerWithLevels: reader.fields = .levels
            case flatMarkerCompact: reader.fields = .compact
            default: reader.fields = .base
            }
            let cells = reader.fields > .base ? try reader.count() : first
            for _ in 0..<cells {
                let cellTenant = try reader.string()
                let (key, aggregate) = try reader.cell(tenant: cellTenant)
                if tenant == nil || tenant == cellTenant { try body(key, aggregate) }
            }
            guard reader.reader.remaining == 0 else { throw .corruptRow("aggregate log row has \(reader.reader.remaining) trailing bytes") }
            return
        }
        // The directory: the sections to decode (for one tenant, only its own, found by comparing
        // bytes, no strings made).
        let wanted = tenant.map { Array($0.utf8) }
        var sections: [(tenant: String, location: SectionLocation)] = []
        _ = try self.sections(of: bytes) { (name, location) throws(LedgerError) in
            if let wanted, let tenant {
                if name.elementsEqual(wanted) { sections.append((tenant, location)) }
            } else {
                sections.append((String(decoding: name, as: UTF8.self), location))
            }
        }
        for section in sections { try decode(bytes, section: section.location, tenant: section.tenant, body) }
    }

    /// Where one tenant's cells lie in a sectioned row (``sections(of:_:)``).
    package struct SectionLocation: Sendable, Equatable {
        /// What each cell carries (by the layout's marker).
        package var fields: Fields
        /// How many cells.
        package var cells: Int
        /// Their bytes in the row.
        package var bytes: Range<Int>
    }

    /// Hands each section of a sectioned row to `body`: its tenant's name (the bytes, in place)
    /// and where its cells lie, in directory order, after checking that the sections fill the
    /// row. False, with nothing handed, for a flat row (its cells name their tenants).
    package static func sections(
        of bytes: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer, SectionLocation) throws(LedgerError) -> Void
    ) throws(LedgerError) -> Bool {
        var reader = Reader(reader: ByteReader(bytes))
        switch try reader.integer(4) {
        case markerCompact: reader.fields = .compact
        case markerWithLevels: reader.fields = .levels
        case markerWithMinimum: reader.fields = .minimum
        case marker: reader.fields = .base
        default: return false
        }
        let tenants = try reader.count()
        var directory: [(name: UnsafeRawBufferPointer, cells: Int, offset: Int, length: Int)] = []
        directory.reserveCapacity(Int(min(tenants, 4096)))
        var offset = 0
        for _ in 0..<tenants {
            let name = try reader.bytes()
            let cells = Int(try reader.count())
            let length = Int(try reader.count())
            directory.append((name, cells, offset, length))
            offset += length
            guard offset <= reader.reader.remaining else { throw .corruptRow("aggregate log row: its sections run past its end") }
        }
        guard offset == reader.reader.remaining else {
            throw .corruptRow("aggregate log row: its sections take \(offset) bytes, \(reader.reader.remaining) follow the directory")
        }
        let sectionsStart = reader.reader.index
        for entry in directory {
            let start = sectionsStart + entry.offset
            try body(entry.name, SectionLocation(fields: reader.fields, cells: entry.cells, bytes: start..<(start + entry.length)))
        }
        return true
    }

    /// Hands each cell of one section of a sectioned row (as ``sections(of:_:)`` located it) to
    /// `body`, its key naming `tenant`.
    package static func decode(
        _ bytes: UnsafeRawBufferPointer, section: SectionLocation, tenant: String,
        _ body: (AggregateCellKey, UsageAggregate) throws(LedgerError) -> Void
    ) throws(LedgerError) {
        guard section.bytes.lowerBound >= 0, section.bytes.upperBound <= bytes.count else {
            throw .corruptRow("aggregate log row: the section of \(tenant) lies outside the row")
        }
        var reader = Reader(reader: ByteReader(UnsafeRawBufferPointer(rebasing: bytes[section.bytes])))
        reader.fields = section.fields
        for _ in 0..<section.cells {
            let (key, aggregate) = try reader.cell(tenant: tenant)
            try body(key, aggregate)
        }
        guard reader.reader.remaining == 0 else {
            throw .corruptRow("aggregate log row: the section of \(tenant) is not \(section.bytes.count) bytes")
        }
    }

    /// The core's ``ByteReader``, saying what is wrong.
    private struct Reader {
        var reader: ByteReader
        /// What each cell ends with (the layouts written since issue 15 add fields).
        var fields = Fields.base

        /// One cell after its tenant: metric, dimension, value, billed_in, then the numbers.
        mutating func cell(tenant: String) throws(LedgerError) -> (AggregateCellKey, UsageAggregate) {
            guard fields < .compact else { return try compactCell(tenant: tenant) }
            let (metric, dimension, value, billedIn) = try keyText()
            let hour = Int64(bitPattern: try integer(8))
            let sum = Quantity(nanos: try int128())
            let eventCount = Int64(bitPattern: try integer(8))
            let max = Quantity(nanos: try int128())
            let latestTime = EventTime(microseconds: Int64(bitPattern: try integer(8)))
            let fingerprint = Fingerprint(high: try integer(8), low: try integer(8))
            let latest = Quantity(nanos: try int128())
            var minimum: Quantity?
            if fields >= .minimum {
                switch try integer(1) {
                case 0: minimum = nil
                case 1: minimum = Quantity(nanos: try int128())
                case let flag: throw .corruptRow("aggregate log minimum flag \(flag)")
                }
            }
            var aggregate = UsageAggregate(
                sum: sum, count: eventCount, max: max, min: minimum,
                latest: LatestValue(timestamp: latestTime, fingerprint: fingerprint, quantity: latest))
            if fields >= .levels {
                switch try integer(1) {
                case 0: break
                case 1:
                    aggregate.levelDelta = Quantity(nanos: try int128())
                    aggregate.levelTime = Quantity(nanos: try int128())
                case let flag: throw .corruptRow("aggregate log level flag \(flag)")
                }
            }
            return (
                AggregateCellKey(tenant: tenant, metric: metric, hour: hour, dimension: dimension, value: value, billedIn: billedIn),
                aggregate
            )
        }

        /// A cell's text after its tenant, the same in every layout (lengths as ``count()``
        /// reads them): metric, dimension, value, billed_in ('' for none).
        mutating func keyText() throws(LedgerError) -> (metric: String, dimension: String, value: String, billedIn: BillingPeriod?) {
            let metric = try string()
            let dimension = try string()
            let value = try string()
            let billedText = try bytes()
            guard billedText.count > 0 else { return (metric, dimension, value, nil) }
            let text = String(decoding: billedText, as: UTF8.self)
            guard let period = BillingPeriod(text) else { throw .corruptRow("aggregate log billed_in '\(text)'") }
            return (metric, dimension, value, period)
        }

        /// One cell after its tenant, in the compact layouts.
        mutating func compactCell(tenant: String) throws(LedgerError) -> (AggregateCellKey, UsageAggregate) {
            let (metric, dimension, value, billedIn) = try keyText()
            let hour = try signed64()
            let sum = Quantity(nanos: try signed128())
            let eventCount = try signed64()
            let max = Quantity(nanos: try signed128())
            let latestTime = EventTime(microseconds: try signed64() &+ hour &* AggregateLogCodec.microsecondsPerHour)
            let fingerprint = Fingerprint(high: try integer(8), low: try integer(8))
            let latest = Quantity(nanos: try signed128())
            let flags = try integer(1)
            guard flags & ~3 == 0 else { throw .corruptRow("aggregate log cell flags \(flags)") }
            var aggregate = UsageAggregate(
                sum: sum, count: eventCount, max: max, min: flags & 1 == 0 ? nil : Quantity(nanos: try signed128()),
                latest: LatestValue(timestamp: latestTime, fingerprint: fingerprint, quantity: latest))
            if flags & 2 != 0 {
                aggregate.levelDelta = Quantity(nanos: try signed128())
                aggregate.levelTime = Quantity(nanos: try signed128())
            }
            return (
                AggregateCellKey(tenant: tenant, metric: metric, hour: hour, dimension: dimension, value: value, billedIn: billedIn),
                aggregate
            )
        }

        /// A count or length: a varint in the compact layouts (at most 32 bits, as the fixed
        /// layouts' u32), else a big-endian u32.
        mutating func count() throws(LedgerError) -> UInt64 {
            guard fields == .compact else { return try integer(4) }
            guard let value = reader.varint(maxBytes: 5), value <= UInt128(UInt32.max) else {
                throw .corruptRow("aggregate log row has a bad length or count")
            }
            return UInt64(value)
        }

        /// A zigzag varint of at most 64 bits.
        mutating func signed64() throws(LedgerError) -> Int64 {
            guard let value = reader.varint(maxBytes: 10), value <= UInt128(UInt64.max) else {
                throw .corruptRow("aggregate log row has a bad 64-bit number")
            }
            return ZigZag.decode(UInt64(value))
        }

        /// A zigzag varint of at most 128 bits.
        mutating func signed128() throws(LedgerError) -> Int128 {
            guard let value = reader.varint() else { throw .corruptRow("aggregate log row has a bad 128-bit number") }
            return ZigZag.decode(value)
        }

        mutating func integer(_ width: Int) throws(LedgerError) -> UInt64 {
            guard let value = reader.bigEndian(bytes: width) else { throw .corruptRow("aggregate log row is truncated") }
            return value
        }

        mutating func int128() throws(LedgerError) -> Int128 {
            guard let value = reader.bigEndianInt128() else { throw .corruptRow("aggregate log row is truncated") }
            return value
        }

        mutating func string() throws(LedgerError) -> String { String(decoding: try bytes(), as: UTF8.self) }

        /// A string's bytes, in place.
        mutating func bytes() throws(LedgerError) -> UnsafeRawBufferPointer {
            let count = Int(try self.count())
            guard let bytes = reader.slice(count: count) else { throw .corruptRow("aggregate log row is truncated") }
            return bytes
        }
    }
}
