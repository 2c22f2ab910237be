import TallyCore

/// The compact sectioned layout's cells written in one buffer, tenant by tenant, through a
/// pointer.
///
/// Why not `[UInt8].append`, as the older layouts: a preparation thread encodes every batch's
/// cells (about 4.4 a event with the example pricing's group-by), and appending byte by byte —
/// each append checking the array's capacity and uniqueness, each varint through a closure —
/// into one array per tenant, grown by doubling and then copied into the row, was a quarter of
/// that thread's time (`perf` of `tally-bench ingest --pricing deploy/pricing.example.yaml`).
/// Here each cell checks the room once for its largest possible size, the tenants' sections go
/// into one buffer in a counting sort of the cells, and the bytes are those of
/// `appendCompactCell` (the flat layout's cells and the tests compare them).
extension AggregateLogCodec {
    /// Cells encoded section by section: `bytes` holds the sections one after another, and
    /// `sections` each one's tenant, cell count and bytes in `bytes`, in that order.
    struct CompactSections {
        var bytes: [UInt8]
        var sections: [(tenant: String, cells: Int, bytes: Range<Int>)]

        /// The sections as ``row(of:fields:)`` takes them.
        var slices: [(tenant: String, cells: Int, bytes: ArraySlice<UInt8>)] {
            sections.map { ($0.tenant, $0.cells, bytes[$0.bytes]) }
        }
    }

    /// The compact sections of the cells whose tenant `includes` (every cell by default), each
    /// tenant's cells in the order `cells` iterates them.
    static func compactSections(of cells: AggregateCells, including includes: (String) -> Bool = { _ in true }) -> CompactSections {
        let all = cells.cells
        // Pass 1: each included cell's tenant, as an ordinal in first-seen order (-1: left out).
        var ordinals: [String: Int] = [:]
        var tenants: [String] = []
        var counts: [Int] = []
        var picked: [(index: Dictionary<AggregateCellKey, UsageAggregate>.Index, tenant: Int32)] = []
        picked.reserveCapacity(all.count)
        // The previous cell's tenant and ordinal: neighbours often share a tenant.
        var last: (tenant: String, ordinal: Int)?
        var index = all.startIndex
        while index != all.endIndex {
            defer { all.formIndex(after: &index) }
            let tenant = all[index].key.tenant
            let ordinal: Int
            if let last, last.tenant == tenant {
                ordinal = last.ordinal
            } else if let known = ordinals[tenant] {
                ordinal = known
            } else if includes(tenant) {
                ordinal = tenants.count
                ordinals[tenant] = ordinal
                tenants.append(tenant)
                counts.append(0)
            } else {
                ordinal = -1
                ordinals[tenant] = ordinal
            }
            last = (tenant, ordinal)
            guard ordinal >= 0 else { continue }
            counts[ordinal] += 1
            picked.append((index, Int32(ordinal)))
        }
        // A counting sort: each tenant's cells together, in their iteration order.
        var next = [Int](repeating: 0, count: tenants.count)
        var start = 0
        for ordinal in counts.indices {
            next[ordinal] = start
            start += counts[ordinal]
        }
        var order = [Dictionary<AggregateCellKey, UsageAggregate>.Index](repeating: all.startIndex, count: picked.count)
        for cell in picked {
            order[next[Int(cell.tenant)]] = cell.index
            next[Int(cell.tenant)] += 1
        }
        // Pass 2: the cells, tenant by tenant.
        var writer = CompactCellWriter(expectedCells: picked.count)
        var sections: [(tenant: String, cells: Int, bytes: Range<Int>)] = []
        sections.reserveCapacity(tenants.count)
        var position = 0
        for (ordinal, tenant) in tenants.enumerated() {
            let first = writer.count
            for slot in position..<(position + counts[ordinal]) {
                let (key, aggregate) = all[order[slot]]
                writer.append(key, aggregate)
            }
            position += counts[ordinal]
            sections.append((tenant, counts[ordinal], first..<writer.count))
        }
        return CompactSections(bytes: writer.finish(), sections: sections)
    }
}

/// Appends compact cells to one growing buffer, each through a pointer after one check of the
/// room left.
private struct CompactCellWriter {
    private var storage: [UInt8]
    private(set) var count = 0

    /// The most bytes a cell takes besides its strings' UTF-8: four varint lengths (10 each),
    /// the hour, count and latest timestamp (10 each), five 128-bit varints (19 each: sum, max,
    /// latest quantity, minimum; and a level change and time), the fingerprint (16) and the flags.
    static let cellBound = 4 * 10 + 3 * 10 + 6 * 19 + 16 + 1

    init(expectedCells: Int) {
        // About what the example pricing's cells take; a buffer that outgrows it doubles.
        storage = [UInt8](repeating: 0, count: Swift.max(expectedCells * 40, 256))
    }

    mutating func append(_ key: AggregateCellKey, _ aggregate: UsageAggregate) {
        let billedIn = key.billedIn?.description ?? ""
        let bound =
            Self.cellBound + key.metric.utf8.count + key.dimension.utf8.count + key.value.utf8.count + billedIn.utf8.count
        if count + bound > storage.count {
            storage.append(contentsOf: repeatElement(0, count: Swift.max(bound, storage.count)))
        }
        let start = count
        count = storage.withUnsafeMutableBufferPointer { buffer -> Int in
            guard let base = buffer.baseAddress else { return start }
            var out = PointerOut(base + start)
            out.string(key.metric)
            out.string(key.dimension)
            out.string(key.value)
            out.string(billedIn)
            out.varint(ZigZag.encode(key.hour))
            out.varint(ZigZag.encode(aggregate.sum.nanos))
            out.varint(ZigZag.encode(aggregate.count))
            out.varint(ZigZag.encode(aggregate.max.nanos))
            // Wrapping, as `appendCompactCell`.
            out.varint(ZigZag.encode(aggregate.latest.timestamp.microseconds &- key.hour &* AggregateLogCodec.microsecondsPerHour))
            out.bigEndian(aggregate.latest.fingerprint.high)
            out.bigEndian(aggregate.latest.fingerprint.low)
            out.varint(ZigZag.encode(aggregate.latest.quantity.nanos))
            let levels = aggregate.levelDelta != .zero || aggregate.levelTime != .zero
            out.byte((aggregate.min == nil ? 0 : 1) | (levels ? 2 : 0))
            if let minimum = aggregate.min { out.varint(ZigZag.encode(minimum.nanos)) }
            if levels {
                out.varint(ZigZag.encode(aggregate.levelDelta.nanos))
                out.varint(ZigZag.encode(aggregate.levelTime.nanos))
            }
            return out.pointer - base
        }
    }

    /// The bytes written.
    consuming func finish() -> [UInt8] {
        storage.removeLast(storage.count - count)
        return storage
    }
}

/// Writes at a pointer the caller made room for.
private struct PointerOut {
    var pointer: UnsafeMutablePointer<UInt8>

    init(_ pointer: UnsafeMutablePointer<UInt8>) { self.pointer = pointer }

    mutating func byte(_ value: UInt8) {
        pointer.pointee = value
        pointer += 1
    }

    /// Unsigned LEB128 (`LEB128.encode`, inlined here).
    mutating func varint(_ value: UInt64) { LEB128.encode(value) { byte($0) } }

    /// A value that fits 64 bits (most sums and quantities) in 64-bit arithmetic.
    mutating func varint(_ value: UInt128) {
        if value >> 64 == 0 { varint(UInt64(truncatingIfNeeded: value)) } else { LEB128.encode(value) { byte($0) } }
    }

    mutating func bigEndian(_ value: UInt64) {
        UnsafeMutableRawPointer(pointer).storeBytes(of: value.bigEndian, as: UInt64.self)
        pointer += 8
    }

    /// A varint length, then the UTF-8 bytes.
    mutating func string(_ text: String) {
        let utf8 = text.utf8
        varint(UInt64(utf8.count))
        let copied = utf8.withContiguousStorageIfAvailable { bytes -> Bool in
            guard let source = bytes.baseAddress else { return true }
            pointer.update(from: source, count: bytes.count)
            pointer += bytes.count
            return true
        }
        if copied == nil { for unit in utf8 { byte(unit) } }
    }
}
