import TallyCore

/// The bytes of one `aggregate_log` row: a batch's hourly aggregate cells, exact and cheap to
/// write and read back, through the core's byte codec. Big-endian throughout. Strings are a u32
/// byte length and UTF-8; billed_in "" means none.
///
/// Written since issue 12 — grouped by tenant, so a reader asking for one tenant decodes that
/// tenant's cells only (``decode(_:tenant:_:)``):
///
///     u32 0xFFFF_FFFF (the marker), u32 tenant count,
///     per tenant (the directory): tenant, u32 cell count, u32 byte length of its section
///     then the sections, in directory order; per cell:
///       metric, dimension, value, billed_in,
///       i64 hour, i128 sum nanos, i64 count, i128 max nanos,
///       i64 latest timestamp µs, u64 + u64 latest fingerprint, i128 latest quantity nanos
///
/// The first layout, still read (rows logged before an upgrade and not folded yet):
///
///     u32 cell count, then per cell: tenant, then the cell as above
///
/// Since minimums are kept (issue 15), each cell ends with the minimum — u8 1 and i128 min
/// nanos, or u8 0 for a cell whose minimum was not recorded — and the layouts are marked
/// 0xFFFF_FFFE (by tenant, what SQLite ledgers write) and 0xFFFF_FFFD followed by the u32 cell
/// count (flat, what PostgreSQL ledgers write). Rows of the two older layouts decode with no
/// minimum. Since level changes are kept (`weighted_sum`, issue 15), each cell then ends with
/// u8 0, or u8 1 and the i128 level change and i128 level time nanos (``UsageAggregate``), and
/// the layouts are marked 0xFFFF_FFFC (by tenant) and 0xFFFF_FFFB (flat); rows of the layouts
/// before decode with no level change.
///
/// The compact layouts (marked 0xFFFF_FFFA by tenant, what SQLite ledgers write, and 0xFFFF_FFF9
/// flat, what PostgreSQL ledgers write; schema version 6 of both) carry the same fields in about
/// half the bytes: every length, count and number is an unsigned LEB128 varint (signed ones
/// zigzag-encoded, `TallyCore`'s `LEB128` and `ZigZag`) instead of a fixed 4, 8 or 16 bytes.
/// Measured on the example pricing's group-by (about 1.4 cells per event), the fixed layout
/// took about 210 bytes of log per event, more than the raw event's row; the writer copies those
/// bytes into the database's pages, the log's fsync writes them, the fold frees them and every
/// merging reader reads them back. So:
///
///     u32 marker, varint tenant count (by tenant) or varint cell count (flat),
///     by tenant, the directory: per tenant, varint length and UTF-8 name, varint cell count,
///       varint byte length of its section; then the sections
///     per cell (flat: after its tenant as varint length and UTF-8):
///       metric, dimension, value, billed_in, each varint length and UTF-8;
///       zigzag hour, zigzag sum nanos, zigzag count, zigzag max nanos,
///       zigzag (latest timestamp µs − the hour's first µs: it falls within the hour),
///       u64 + u64 big-endian latest fingerprint (random bits: a varint would grow them),
///       zigzag latest quantity nanos,
///       u8 flags (1: a minimum follows, 2: a level change and level time follow), then those
///       as zigzag nanos.
///
/// Cell counts never come near the markers: a batch's cells are bounded by its events.
/// A row that does not decode is reported as ``LedgerError/corruptRow(_:)``, never guessed at.
/// Package-visible so that the fuzz targets (`TallyFuzzTargets`) can feed it bytes.
package enum AggregateLogCodec {
    /// The sectioned layout without minimums (read only).
    package static let marker: UInt64 = 0xFFFF_FFFF
    /// The sectioned layout with minimums.
    package static let markerWithMinimum: UInt64 = 0xFFFF_FFFE
    /// The flat layout with minimums.
    package static let flatMarkerWithMinimum: UInt64 = 0xFFFF_FFFD
    /// The sectioned layout with minimums and level changes (fixed-width numbers; read only).
    package static let markerWithLevels: UInt64 = 0xFFFF_FFFC
    /// The flat layout with minimums and level changes (fixed-width numbers; read only).
    package static let flatMarkerWithLevels: UInt64 = 0xFFFF_FFFB
    /// The compact sectioned layout: what SQLite ledgers write.
    package static let markerCompact: UInt64 = 0xFFFF_FFFA
    /// The compact flat layout: what PostgreSQL ledgers write.
    package static let flatMarkerCompact: UInt64 = 0xFFFF_FFF9

    /// The two layouts above.
    package enum Layout {
        /// Grouped by tenant, behind a directory: what SQLite ledgers write (schema version 3),
        /// for readers that merge the log one tenant at a time.
        case byTenant
        /// Every cell with its tenant: what PostgreSQL ledgers write.
        case flat
    }

    /// The fields each cell carries, by the version that wrote the row.
    package enum Fields: Int, Comparable, Sendable {
        /// Before issue 15.
        case base
        /// Minimums.
        case minimum
        /// Minimums and level changes, fixed-width.
        case levels
        /// The same fields in the compact layouts: what every store writes.
        case compact

        package static func < (a: Fields, b: Fields) -> Bool { a.rawValue < b.rawValue }
    }

    /// `withMinimum: false` writes the layouts of before issue 15, as an older Tally did (for
    /// tests of rows logged before an upgrade); every store writes the compact layouts.
    package static func encode(_ cells: AggregateCells, layout: Layout = .byTenant, withMinimum: Bool = true) -> [UInt8] {
        encode(cells, layout: layout, fields: withMinimum ? .compact : .base)
    }

    /// `fields` below ``Fields/compact`` writes a layout of an older Tally (for tests).
    package static func encode(_ cells: AggregateCells, layout: Layout, fields: Fields) -> [UInt8] {
        guard layout == .byTenant else {
            var out: [UInt8] = []
            out.reserveCapacity(cells.count * 138 + 8)
            switch fields {
            case .base: break
            case .minimum: out.appendBigEndian(flatMarkerWithMinimum, bytes: 4)
            case .levels: out.appendBigEndian(flatMarkerWithLevels, bytes: 4)
            case .compact: out.appendBigEndian(flatMarkerCompact, bytes: 4)
            }
            if fields == .compact {
                out.appendVarint(UInt64(cells.count))
            } else {
                out.appendBigEndian(UInt64(cells.count), bytes: 4)
            }
            for (key, aggregate) in cells.cells {
                appendString(key.tenant, fields: fields, to: &out)
                appendCell(key, aggregate, fields: fields, to: &out)
            }
            return out
        }
        return row(of: Array(Section.sections(of: cells, fields: fields)), fields: fields)
    }

    /// The sectioned layout's marker for `fields`.
    private static func sectionedMarker(_ fields: Fields) -> UInt64 {
        switch fields {
        case .base: marker
        case .minimum: markerWithMinimum
        case .levels: markerWithLevels
        case .compact: markerCompact
        }
    }

    /// The sectioned row of `sections`: the marker, the directory, then the sections.
    private static func row(of sections: [(key: String, value: Section)], fields: Fields) -> [UInt8] {
        row(of: sections.map { ($0.key, $0.value.count, $0.value.bytes[...]) }, fields: fields)
    }

    /// The sectioned row of each tenant's cell count and encoded cells.
    private static func row(of sections: [(tenant: String, cells: Int, bytes: ArraySlice<UInt8>)], fields: Fields) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(sections.reduce(8) { $0 + $1.tenant.utf8.count + 12 + $1.bytes.count })
        out.appendBigEndian(sectionedMarker(fields), bytes: 4)
        appendCount(sections.count, fields: fields, to: &out)
        for section in sections {
            appendString(section.tenant, fields: fields, to: &out)
            appendCount(section.cells, fields: fields, to: &out)
            appendCount(section.bytes.count, fields: fields, to: &out)
        }
        for section in sections { out.append(contentsOf: section.bytes) }
        return out
    }

    /// A count or length: a varint in the compact layouts, else a big-endian u32.
    private static func appendCount(_ count: Int, fields: Fields, to bytes: inout [UInt8]) {
        if fields == .compact { bytes.appendVarint(UInt64(count)) } else { bytes.appendBigEndian(UInt64(count), bytes: 4) }
    }

    /// A string: its length (``appendCount(_:fields:to:)``), then its UTF-8 bytes.
    private static func appendString(_ text: String, fields: Fields, to bytes: inout [UInt8]) {
        if fields == .compact { bytes.appendVarintString(text) } else { bytes.appendString32(text) }
    }

    /// A batch's sectioned row (what SQLite ledgers write), encoded ahead on a preparation
    /// thread (``LedgerSpeculation``) as the bytes the writer inserts, so that the writer neither
    /// encodes it nor assembles it from sections, and a batch in flight holds one array.
    package struct Sections: Sendable {
        private let whole: [UInt8]
        /// Each tenant's section in ``whole``: its cell count and its bytes.
        private let directory: [Entry]

        struct Entry: Sendable {
            var tenant: String
            var cells: Int
            var bytes: Range<Int>
        }

        package init(_ cells: AggregateCells) {
            let sections = Array(Section.sections(of: cells, fields: .compact))
            whole = AggregateLogCodec.row(of: sections, fields: .compact)
            // The sections end the row, after the marker and the directory.
            var offset = whole.count - sections.reduce(0) { $0 + $1.value.bytes.count }
            var directory: [Entry] = []
            directory.reserveCapacity(sections.count)
            for (tenant, section) in sections {
                directory.append(Entry(tenant: tenant, cells: section.count, bytes: offset..<(offset + section.bytes.count)))
                offset += section.bytes.count
            }
            self.directory = directory
        }

        /// The row when the cells are the ones it was encoded from (`changed` empty: no event's
        /// key was stored); otherwise the row of `cells`, whose tenants outside `changed` have
        /// the cells the row was encoded from: their sections are copied, and only the changed
        /// tenants' are encoded afresh (a tenant left with no cell goes). A batch with a few
        /// events found stored — almost every batch of a workload with client retries — costs
        /// the writer a copy of the row, not its encoding.
        package func row(changing changed: Set<String>, to cells: AggregateCells) -> [UInt8] {
            guard !changed.isEmpty else { return whole }
            // A few tenants change: comparing a cell's tenant with each (small strings compare
            // in place) is cheaper than hashing it.
            let few = changed.count <= 8 ? Array(changed) : nil
            func isChanged(_ tenant: String) -> Bool { few.map { $0.contains(tenant) } ?? changed.contains(tenant) }
            var fresh: [String: Section] = [:]
            for (key, aggregate) in cells.cells where isChanged(key.tenant) {
                fresh[key.tenant, default: Section()].append(key, aggregate, fields: .compact)
            }
            var kept: [(tenant: String, cells: Int, bytes: ArraySlice<UInt8>)] = []
            kept.reserveCapacity(directory.count + fresh.count)
            for entry in directory where !isChanged(entry.tenant) { kept.append((entry.tenant, entry.cells, whole[entry.bytes])) }
            for (tenant, section) in fresh { kept.append((tenant, section.count, section.bytes[...])) }
            return AggregateLogCodec.row(of: kept, fields: .compact)
        }
    }

    /// One tenant's cells, encoded.
    fileprivate struct Section: Sendable {
        static func sections(of cells: AggregateCells, fields: Fields) -> [String: Section] {
            var sections: [String: Section] = [:]
            for (key, aggregate) in cells.cells { sections[key.tenant, default: Section()].append(key, aggregate, fields: fields) }
            return sections
        }

        var count = 0
        var bytes: [UInt8] = []

        mutating func append(_ key: AggregateCellKey, _ aggregate: UsageAggregate, fields: Fields) {
            count += 1
            appendCell(key, aggregate, fields: fields, to: &bytes)
        }
    }

    /// One cell after its tenant, in both layouts.
    private static func appendCell(_ key: AggregateCellKey, _ aggregate: UsageAggregate, fields: Fields, to bytes: inout [UInt8]) {
        guard fields < .compact else { return appendCompactCell(key, aggregate, to: &bytes) }
        bytes.appendString32(key.metric)
        bytes.appendString32(key.dimension)
        bytes.appendString32(key.value)
        bytes.appendString32(key.billedIn?.description ?? "")
        bytes.appendBigEndian(UInt64(bitPattern: key.hour), bytes: 8)
        bytes.appendBigEndian(aggregate.sum.nanos)
        bytes.appendBigEndian(UInt64(bitPattern: aggregate.count), bytes: 8)
        bytes.appendBigEndian(aggregate.max.nanos)
        bytes.appendBigEndian(UInt64(bitPattern: aggregate.latest.timestamp.microseconds), bytes: 8)
        bytes.appendBigEndian(aggregate.latest.fingerprint.high, bytes: 8)
        bytes.appendBigEndian(aggregate.latest.fingerprint.low, bytes: 8)
        bytes.appendBigEndian(aggregate.latest.quantity.nanos)
        guard fields >= .minimum else { return }
        if let minimum = aggregate.min {
            bytes.append(1)
            bytes.appendBigEndian(minimum.nanos)
        } else {
            bytes.append(0)
        }
        guard fields >= .levels else { return }
        if aggregate.levelDelta == .zero && aggregate.levelTime == .zero {
            bytes.append(0)
        } else {
            bytes.append(1)
            bytes.appendBigEndian(aggregate.levelDelta.nanos)
            bytes.appendBigEndian(aggregate.levelTime.nanos)
        }
    }

    /// One cell after its tenant, in the compact layouts.
    private static func appendCompactCell(_ key: AggregateCellKey, _ aggregate: UsageAggregate, to bytes: inout [UInt8]) {
        bytes.appendVarintString(key.metric)
        bytes.appendVarintString(key.dimension)
        bytes.appendVarintString(key.value)
        if let billedIn = key.billedIn { bytes.appendVarintString(billedIn.description) } else { bytes.append(0) }
        bytes.appendVarint(UInt64(ZigZag.encode(key.hour)))
        bytes.appendVarint(ZigZag.encode(aggregate.sum.nanos))
        bytes.appendVarint(ZigZag.encode(aggregate.count))
        bytes.appendVarint(ZigZag.encode(aggregate.max.nanos))
        // Wrapping: any timestamp comes back exactly, and one within the hour takes 5 bytes or fewer.
        bytes.appendVarint(ZigZag.encode(aggregate.latest.timestamp.microseconds &- key.hour &* microsecondsPerHour))
        bytes.appendBigEndian(aggregate.latest.fingerprint.high, bytes: 8)
        bytes.appendBigEndian(aggregate.latest.fingerprint.low, bytes: 8)
        bytes.appendVarint(ZigZag.encode(aggregate.latest.quantity.nanos))
        let levels = aggregate.levelDelta != .zero || aggregate.levelTime != .zero
        bytes.append((aggregate.min == nil ? 0 : 1) | (levels ? 2 : 0))
        if let minimum = aggregate.min { bytes.appendVarint(ZigZag.encode(minimum.nanos)) }
        if levels {
            bytes.appendVarint(ZigZag.encode(aggregate.levelDelta.nanos))
            bytes.appendVarint(ZigZag.encode(aggregate.levelTime.nanos))
        }
    }

    static let microsecondsPerHour: Int64 = 3_600_000_000

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
        reader.fields =
            switch first {
            case markerCompact: .compact
            case markerWithLevels: .levels
            case markerWithMinimum: .minimum
            default: .base
            }
        // The directory: the sections to decode (for one tenant, only its own, found by comparing
        // bytes, no strings made), each with its offset after the directory.
        let tenants = try reader.count()
        let wanted = tenant.map { Array($0.utf8) }
        var sections: [(tenant: String, cells: UInt64, offset: Int, length: Int)] = []
        var offset = 0
        for _ in 0..<tenants {
            let name = try reader.bytes()
            let cells = try reader.count()
            let length = Int(try reader.count())
            if let wanted, let tenant {
                if name.elementsEqual(wanted) { sections.append((tenant, cells, offset, length)) }
            } else {
                sections.append((String(decoding: name, as: UTF8.self), cells, offset, length))
            }
            offset += length
            guard offset <= reader.reader.remaining else { throw .corruptRow("aggregate log row: its sections run past its end") }
        }
        guard offset == reader.reader.remaining else {
            throw .corruptRow("aggregate log row: its sections take \(offset) bytes, \(reader.reader.remaining) follow the directory")
        }
        let sectionsStart = reader.reader.index
        for section in sections {
            reader.reader.index = sectionsStart + section.offset
            for _ in 0..<section.cells {
                let (key, aggregate) = try reader.cell(tenant: section.tenant)
                try body(key, aggregate)
            }
            guard reader.reader.index - sectionsStart - section.offset == section.length else {
                throw .corruptRow("aggregate log row: the section of \(section.tenant) is not \(section.length) bytes")
            }
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
            let metric = try string()
            let dimension = try string()
            let value = try string()
            let billedText = try string()
            var billedIn: BillingPeriod?
            if !billedText.isEmpty {
                guard let period = BillingPeriod(billedText) else { throw .corruptRow("aggregate log billed_in '\(billedText)'") }
                billedIn = period
            }
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

        /// One cell after its tenant, in the compact layouts.
        mutating func compactCell(tenant: String) throws(LedgerError) -> (AggregateCellKey, UsageAggregate) {
            let metric = try string()
            let dimension = try string()
            let value = try string()
            let billedText = try bytes()
            var billedIn: BillingPeriod?
            if billedText.count > 0 {
                let text = String(decoding: billedText, as: UTF8.self)
                guard let period = BillingPeriod(text) else { throw .corruptRow("aggregate log billed_in '\(text)'") }
                billedIn = period
            }
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
