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
/// count (flat, what PostgreSQL ledgers wrote). Rows of the two older layouts decode with no
/// minimum. Since level changes are kept (`weighted_sum`, issue 15), each cell then ends with
/// u8 0, or u8 1 and the i128 level change and i128 level time nanos (``UsageAggregate``), and
/// the layouts are marked 0xFFFF_FFFC (by tenant) and 0xFFFF_FFFB (flat); rows of the layouts
/// before decode with no level change.
///
/// The compact layouts (marked 0xFFFF_FFFA by tenant, what both stores write, and 0xFFFF_FFF9
/// flat, what PostgreSQL ledgers wrote before they sectioned their rows too, still read; schema
/// version 6 of both) carry the same fields in about half the bytes: every length, count and
/// number is an unsigned LEB128 varint (signed ones zigzag-encoded, `TallyCore`'s `LEB128` and
/// `ZigZag`) instead of a fixed 4, 8 or 16 bytes.
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
    /// The compact flat layout: what PostgreSQL ledgers wrote before they sectioned their rows (still read).
    package static let flatMarkerCompact: UInt64 = 0xFFFF_FFF9

    /// The two layouts above.
    package enum Layout {
        /// Grouped by tenant, behind a directory: what both stores write (SQLite since schema
        /// version 3), for readers that merge the log one tenant at a time.
        case byTenant
        /// Every cell with its tenant: what PostgreSQL ledgers wrote before (still read; tests).
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
            appendCount(cells.count, fields: fields, to: &out)
            for (key, aggregate) in cells.cells {
                appendString(key.tenant, fields: fields, to: &out)
                appendCell(key, aggregate, fields: fields, to: &out)
            }
            return out
        }
        if fields == .compact { return row(of: compactSections(of: cells).slices, fields: fields) }
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
    static func row(of sections: [(key: String, value: Section)], fields: Fields) -> [UInt8] {
        row(of: sections.map { ($0.key, $0.value.count, $0.value.bytes[...]) }, fields: fields)
    }

    /// The sectioned row of each tenant's cell count and encoded cells.
    static func row(of sections: [(tenant: String, cells: Int, bytes: ArraySlice<UInt8>)], fields: Fields) -> [UInt8] {
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

    /// One tenant's cells, encoded.
    struct Section: Sendable {
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
}
