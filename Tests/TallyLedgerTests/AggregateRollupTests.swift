import Foundation
import TallyCore
@testable import TallyLedger
import TallyTestSupport
import Testing
import TallyWorkload

@Suite("Aggregate rollups and buffer", .offThePool)
struct AggregateRollupTests {
    func hour(_ text: String) -> Int64 { at(text).hourSinceEpoch }

    @Test func planReadsWholeMonthsAndDaysFromTheRollups() {
        let pieces = AggregateGrain.plan(hour("2026-03-03T05:00:00Z")..<hour("2026-05-10T07:00:00Z"), coarsest: .month)
        let expected: [(AggregateGrain, String, String)] = [
            (.hour, "2026-03-03T05:00:00Z", "2026-03-04T00:00:00Z"),
            (.day, "2026-03-04T00:00:00Z", "2026-04-01T00:00:00Z"),
            (.month, "2026-04-01T00:00:00Z", "2026-05-01T00:00:00Z"),
            (.day, "2026-05-01T00:00:00Z", "2026-05-10T00:00:00Z"),
            (.hour, "2026-05-10T00:00:00Z", "2026-05-10T07:00:00Z"),
        ]
        #expect(pieces.count == expected.count)
        for (piece, want) in zip(pieces, expected) {
            #expect(piece.grain == want.0 && piece.hours == hour(want.1)..<hour(want.2))
        }
        // A whole month is one row; an hour granularity never uses a rollup.
        let march = hour("2026-03-01T00:00:00Z")..<hour("2026-04-01T00:00:00Z")
        #expect(AggregateGrain.plan(march, coarsest: .month).map(\.grain) == [.month])
        #expect(AggregateGrain.plan(march, coarsest: .day).map(\.grain) == [.day])
        #expect(AggregateGrain.plan(march, coarsest: .hour).map(\.grain) == [.hour])
    }

    @Test func planCoversEveryRangeExactlyOnce() {
        var random = SplitMix64(seed: 11)
        let base = hour("2025-12-20T00:00:00Z")
        for _ in 0..<2000 {
            let lower = base + Int64(random.next() % 3000)
            let upper = lower + Int64(random.next() % 3000)
            for coarsest in AggregateGrain.allCases {
                let pieces = AggregateGrain.plan(lower..<upper, coarsest: coarsest)
                var next = lower
                for piece in pieces {
                    #expect(piece.hours.lowerBound == next && !piece.hours.isEmpty && piece.grain <= coarsest)
                    // Each piece is whole buckets of its grain.
                    #expect(piece.grain.bucket(of: piece.hours.lowerBound) == piece.hours.lowerBound)
                    #expect(piece.grain.bucket(of: piece.hours.upperBound) == piece.hours.upperBound)
                    next = piece.hours.upperBound
                }
                #expect(next == max(lower, upper) || (lower == upper && pieces.isEmpty))
            }
        }
    }

    @Test func logRowsRoundTripAndRefuseDamage() throws {
        var cells = AggregateCells()
        for event in workload(count: 300, seed: 3, start: at("2026-04-01T00:00:00Z"), spanHours: 30, tenants: 4) {
            try cells.add(
                event, fingerprint: Fingerprint(of: event), billedIn: event.tenant == "tenant-1" ? period("2026-05") : nil, groupBy: ["endpoint"])
        }
        let bytes = AggregateLogCodec.encode(cells)
        var decoded = AggregateCells()
        try AggregateLogCodec.decode(bytes, into: &decoded)
        #expect(decoded.cells == cells.cells)
        for cut in [1, 7, bytes.count / 2, bytes.count - 1] {
            var partial = AggregateCells()
            #expect(throws: LedgerError.self) { try AggregateLogCodec.decode(Array(bytes[0..<cut]), into: &partial) }
        }
        var partial = AggregateCells()
        #expect(throws: LedgerError.self) { try AggregateLogCodec.decode(bytes + [0], into: &partial) }
    }

    /// A sectioned row of many tenants (the encoder groups each tenant's cells into one section
    /// of one buffer): each tenant's section holds exactly that tenant's cells, whether the row
    /// is encoded whole, ahead (`Sections`) or with some tenants' sections encoded afresh.
    @Test func eachTenantsSectionHoldsItsCells() throws {
        var cells = AggregateCells()
        for event in workload(count: 2_000, seed: 41, start: at("2026-04-01T00:00:00Z"), spanHours: 6, tenants: 60, skewed: true) {
            try cells.add(event, fingerprint: Fingerprint(of: event), billedIn: nil, groupBy: ["endpoint"])
        }
        var byTenant: [String: [AggregateCellKey: UsageAggregate]] = [:]
        for (key, aggregate) in cells.cells { byTenant[key.tenant, default: [:]][key] = aggregate }
        #expect(byTenant.count > 30)
        // Two tenants' cells changed, as when some of their events turn out stored.
        var changed = cells
        let names = byTenant.keys.sorted()
        for name in names.prefix(2) {
            for key in byTenant[name, default: [:]].keys.sorted(by: <).prefix(3) { changed.set(nil, at: key) }
        }
        let sections = AggregateLogCodec.Sections(cells)
        for (row, expected) in [
            (AggregateLogCodec.encode(cells), cells), (sections.row(changing: [], to: cells), cells),
            (sections.row(changing: Set(names.prefix(2)), to: changed), changed),
        ] {
            var whole = AggregateCells()
            try AggregateLogCodec.decode(row, into: &whole)
            #expect(whole.cells == expected.cells)
            for name in names {
                var found: [AggregateCellKey: UsageAggregate] = [:]
                try row.withUnsafeBytes { bytes in
                    try Result { () throws(LedgerError) in
                        try AggregateLogCodec.decode(bytes, tenant: name) { (key, aggregate) throws(LedgerError) in found[key] = aggregate }
                    }.get()
                }
                #expect(found == expected.cells.filter { $0.key.tenant == name }, "\(name)")
            }
        }
    }

    /// The compact layouts (schema version 6) carry every field of the fixed-width ones in at
    /// most 60% of their bytes, on cells shaped like a collector's (a group-by, a late event's
    /// billing period), and decode to the same cells, whole or one tenant alone.
    @Test func compactRowsAreSmallerAndDecodeTheSame() throws {
        var cells = AggregateCells()
        for event in workload(count: 400, seed: 21, start: at("2026-04-01T00:00:00Z"), spanHours: 6, tenants: 8) {
            try cells.add(
                event, fingerprint: Fingerprint(of: event), billedIn: event.tenant == "tenant-3" ? period("2026-05") : nil,
                groupBy: ["endpoint", "region"])
        }
        for layout in [AggregateLogCodec.Layout.flat, .byTenant] {
            let fixed = AggregateLogCodec.encode(cells, layout: layout, fields: .levels)
            let compact = AggregateLogCodec.encode(cells, layout: layout)
            #expect(compact.count * 10 <= fixed.count * 6, "\(layout): \(compact.count) bytes against \(fixed.count)")
            for row in [fixed, compact] {
                var decoded = AggregateCells()
                try AggregateLogCodec.decode(row, into: &decoded)
                #expect(decoded.cells == cells.cells, "\(layout)")
                #expect(try Self.cells(of: "tenant-3", in: row) == cells.cells.filter { $0.key.tenant == "tenant-3" })
            }
        }
    }

    /// Every value a cell can hold comes back exactly from the compact layouts: the extremes of
    /// the 128-bit quantities, negative sums and counts (corrections), a minimum, level changes,
    /// a latest timestamp outside its cell's hour (or at the ends of time), non-ASCII text.
    @Test func compactRowsKeepExtremeValues() throws {
        let hour = at("2026-04-01T07:00:00Z").hourSinceEpoch
        let values: [(AggregateCellKey, UsageAggregate)] = [
            (
                AggregateCellKey(tenant: "tenänt-ü", metric: "bytes_out", hour: hour, dimension: "région", value: "eu-🌍"),
                UsageAggregate(
                    sum: Quantity(nanos: .max), count: .max, max: Quantity(nanos: .max), min: Quantity(nanos: .min),
                    latest: LatestValue(
                        timestamp: EventTime(microseconds: .max), fingerprint: Fingerprint(high: .max, low: 0), quantity: Quantity(nanos: .min)))
            ),
            (
                AggregateCellKey(tenant: "acme", metric: "api_calls", hour: -hour, billedIn: period("2026-05")),
                UsageAggregate(
                    sum: Quantity(nanos: -5_000_000_000), count: -3, max: Quantity(nanos: 0), min: nil,
                    latest: LatestValue(timestamp: EventTime(microseconds: .min), fingerprint: Fingerprint(high: 0, low: .max), quantity: .zero))
            ),
            (
                AggregateCellKey(tenant: "acme", metric: "seats", hour: .max),
                {
                    var level = UsageAggregate(
                        sum: Quantity(7), count: 1, max: Quantity(7), min: Quantity(7),
                        latest: LatestValue(timestamp: at("2026-04-02T00:00:00Z"), fingerprint: Fingerprint(high: 1, low: 2), quantity: Quantity(7)))
                    level.levelDelta = Quantity(nanos: -.max)
                    level.levelTime = Quantity(nanos: 123_456_789)
                    return level
                }()
            ),
        ]
        var cells = AggregateCells()
        for (key, aggregate) in values { try cells.add(aggregate, at: key) }
        #expect(cells.count == 3)
        for layout in [AggregateLogCodec.Layout.flat, .byTenant] {
            var decoded = AggregateCells()
            try AggregateLogCodec.decode(AggregateLogCodec.encode(cells, layout: layout), into: &decoded)
            #expect(decoded.cells == cells.cells, "\(layout)")
        }
    }

    /// The pointer writer that encodes rows (`compactSections`) writes each tenant's section
    /// byte for byte as the cell-by-cell encoder (`Section`, the flat layout's), cells in the same
    /// order, on extreme values and on a collector's cells; with a filter, only the tenants it
    /// takes, each whole.
    @Test func thePointerWriterWritesTheBytesOfTheCellByCellEncoder() throws {
        var cells = AggregateCells()
        let hour = at("2026-04-01T07:00:00Z").hourSinceEpoch
        try cells.add(
            UsageAggregate(
                sum: Quantity(nanos: .max), count: .max, max: Quantity(nanos: .max), min: Quantity(nanos: .min),
                latest: LatestValue(
                    timestamp: EventTime(microseconds: .max), fingerprint: Fingerprint(high: .max, low: 0), quantity: Quantity(nanos: .min))),
            at: AggregateCellKey(tenant: "tenänt-ü", metric: "bytes_out", hour: hour, dimension: "région", value: "eu-🌍"))
        var level = UsageAggregate(
            sum: Quantity(nanos: -5), count: -3, max: .zero, min: nil,
            latest: LatestValue(timestamp: EventTime(microseconds: .min), fingerprint: Fingerprint(high: 0, low: .max), quantity: .zero))
        level.levelDelta = Quantity(nanos: .min + 1)
        level.levelTime = Quantity(nanos: 123_456_789)
        try cells.add(level, at: AggregateCellKey(tenant: "acme", metric: "seats", hour: .min, billedIn: period("2026-05")))
        // A string longer than the 15 bytes Swift keeps inline.
        try cells.add(level, at: AggregateCellKey(tenant: "acme", metric: String(repeating: "m", count: 300), hour: .max, value: ""))
        for event in workload(count: 3_000, seed: 43, start: at("2026-04-01T00:00:00Z"), spanHours: 5, tenants: 40, skewed: true) {
            try cells.add(
                event, fingerprint: Fingerprint(of: event), billedIn: event.tenant.hasSuffix("7") ? period("2026-05") : nil,
                groupBy: ["endpoint", "region"])
        }
        let reference = AggregateLogCodec.Section.sections(of: cells, fields: .compact)
        #expect(reference.count > 30)
        for keep in [{ (_: String) in true }, { (tenant: String) in tenant.hasSuffix("1") || tenant == "acme" }] {
            let written = AggregateLogCodec.compactSections(of: cells, including: keep)
            #expect(written.sections.count == reference.keys.filter(keep).count)
            #expect(written.bytes.count == written.sections.reduce(0) { $0 + $1.bytes.count })
            for section in written.sections {
                let expected = try #require(reference[section.tenant], "\(section.tenant)")
                #expect(section.cells == expected.count, "\(section.tenant)")
                #expect(Array(written.bytes[section.bytes]) == expected.bytes, "\(section.tenant)")
            }
        }
    }

    /// A damaged compact row is refused with an error, never read as other cells: every
    /// truncation, trailing bytes, a varint that does not end, unknown cell flags.
    @Test func damagedCompactRowsAreRefused() throws {
        var cells = AggregateCells()
        for event in workload(count: 40, seed: 23, start: at("2026-04-01T00:00:00Z"), spanHours: 3, tenants: 3) {
            try cells.add(event, fingerprint: Fingerprint(of: event), billedIn: nil, groupBy: ["endpoint"])
        }
        for layout in [AggregateLogCodec.Layout.flat, .byTenant] {
            let row = AggregateLogCodec.encode(cells, layout: layout)
            for cut in 0..<row.count {
                var partial = AggregateCells()
                #expect(throws: LedgerError.self, "\(layout) cut at \(cut)") { try AggregateLogCodec.decode(Array(row[0..<cut]), into: &partial) }
            }
            var partial = AggregateCells()
            #expect(throws: LedgerError.self) { try AggregateLogCodec.decode(row + [0], into: &partial) }
            // The count after the marker as a varint that never ends.
            #expect(throws: LedgerError.self) {
                try AggregateLogCodec.decode(Array(row[0..<4]) + [UInt8](repeating: 0xFF, count: 24), into: &partial)
            }
        }
        // One cell whose flags byte (the last byte here: no minimum, no level change) is unknown.
        var one = AggregateCells()
        try one.add(
            UsageAggregate(
                sum: Quantity(1), count: 1, max: Quantity(1), min: nil,
                latest: LatestValue(timestamp: at("2026-04-01T00:10:00Z"), fingerprint: Fingerprint(high: 3, low: 4), quantity: Quantity(1))),
            at: AggregateCellKey(tenant: "acme", metric: "api_calls", hour: at("2026-04-01T00:00:00Z").hourSinceEpoch))
        var row = AggregateLogCodec.encode(one, layout: .flat)
        #expect(row.last == 0)
        row[row.count - 1] = 4
        var decoded = AggregateCells()
        #expect(throws: LedgerError.self) { try AggregateLogCodec.decode(row, into: &decoded) }
    }

    /// Rows are sectioned by tenant: a reader asking for one tenant decodes that tenant's cells,
    /// exactly the row's cells of that tenant, and a damaged row is refused either way.
    @Test func oneTenantsCellsDecodeAlone() throws {
        var cells = AggregateCells()
        for event in workload(count: 300, seed: 5, start: at("2026-04-01T00:00:00Z"), spanHours: 30, tenants: 5) {
            try cells.add(event, fingerprint: Fingerprint(of: event), billedIn: nil, groupBy: ["endpoint"])
        }
        let bytes = AggregateLogCodec.encode(cells)
        for tenant in (0..<5).map({ "tenant-\($0)" }) + ["nobody"] {
            let alone = try Self.cells(of: tenant, in: bytes)
            #expect(alone == cells.cells.filter { $0.key.tenant == tenant }, "\(tenant)")
            for cut in [9, bytes.count / 3, bytes.count - 1] {
                #expect(throws: LedgerError.self) { try Self.cells(of: tenant, in: Array(bytes[0..<cut])) }
            }
        }
    }

    /// One tenant's cells of a log row, decoded alone.
    static func cells(of tenant: String, in bytes: [UInt8]) throws -> [AggregateCellKey: UsageAggregate] {
        var found: [AggregateCellKey: UsageAggregate] = [:]
        let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 1)
        defer { copy.deallocate() }
        copy.copyBytes(from: bytes)
        try AggregateLogCodec.decode(UnsafeRawBufferPointer(copy), tenant: tenant) { (key, aggregate) throws(LedgerError) in
            #expect(found[key] == nil, "one cell per key")
            found[key] = aggregate
        }
        return found
    }

    /// Rows in the first layout (logged before an upgrade and not folded yet) still decode,
    /// whole or one tenant alone, with no minimum (it was not recorded).
    @Test func rowsInTheFirstLayoutStillDecode() throws {
        var cells = AggregateCells()
        for event in workload(count: 200, seed: 9, start: at("2026-04-01T00:00:00Z"), spanHours: 10, tenants: 3) {
            try cells.add(event, fingerprint: Fingerprint(of: event), billedIn: period("2026-05"), groupBy: ["endpoint"])
        }
        var unrecorded = cells.cells
        for key in unrecorded.keys { unrecorded[key]?.min = nil }
        // The first layout: u32 cell count, then each cell with its tenant.
        let first = AggregateLogCodec.encode(cells, layout: .flat, withMinimum: false)
        #expect(first.prefix(4).reduce(0) { $0 << 8 | Int($1) } == cells.count)
        var decoded = AggregateCells()
        try AggregateLogCodec.decode(first, into: &decoded)
        #expect(decoded.cells == unrecorded)
        let alone = try Self.cells(of: "tenant-1", in: first)
        #expect(!alone.isEmpty && alone == unrecorded.filter { $0.key.tenant == "tenant-1" })
        // The sectioned layout of before minimums, one tenant alone.
        let sectioned = AggregateLogCodec.encode(cells, layout: .byTenant, withMinimum: false)
        #expect(try Self.cells(of: "tenant-2", in: sectioned) == unrecorded.filter { $0.key.tenant == "tenant-2" })
    }

    /// Both layouts written since issue 15 carry each cell's minimum, recorded or not.
    @Test func layoutsWithMinimumsRoundTrip() throws {
        var cells = AggregateCells()
        for event in workload(count: 200, seed: 11, start: at("2026-04-01T00:00:00Z"), spanHours: 10, tenants: 3) {
            try cells.add(event, fingerprint: Fingerprint(of: event), billedIn: nil, groupBy: ["region"])
        }
        // A cell whose minimum was not recorded (folded from a row of an older Tally) stays so.
        let old = UsageAggregate(
            sum: Quantity(5), count: 2, max: Quantity(3), min: nil,
            latest: LatestValue(timestamp: at("2026-04-01T00:30:00Z"), fingerprint: Fingerprint(high: 1, low: 2), quantity: Quantity(3)))
        try cells.add(old, at: AggregateCellKey(tenant: "tenant-9", metric: "api_calls", hour: at("2026-04-01T00:00:00Z").hourSinceEpoch))
        #expect(cells.cells.values.contains { $0.min != nil && $0.min != $0.max })
        for layout in [AggregateLogCodec.Layout.flat, .byTenant] {
            var decoded = AggregateCells()
            try AggregateLogCodec.decode(AggregateLogCodec.encode(cells, layout: layout), into: &decoded)
            #expect(decoded.cells == cells.cells)
        }
    }

    /// A fold deletes the folded log rows without zeroing their pages (`secure_delete = FAST`,
    /// `SQLiteSchema.pragmas`): Debian's SQLite zeroes deleted content by default, and then the
    /// fold's transaction wrote every page of the log's blobs to the WAL once more. Here the log
    /// is ~100 batches of the same 400 cells, so the fold's own writes (the 401 cells at three
    /// grains) are a few dozen pages against hundreds in the log.
    @Test func aFoldDoesNotRewriteTheFoldedLogsPages() throws {
        let ledger = try TestLedger(SQLiteFactory(), configuration: TestLedger.foldingOnRequest)
        let store = try #require(ledger.store as? SQLiteLedgerStore)
        for sequence in 1...100 {
            let events = (0..<400).map { n in event(id: "e-\(sequence)-\(n)", [("endpoint", "/api/v1/resource-number-\(n)")]) }
            _ = try store.commit(batch(UInt64(sequence), events))
        }
        func pragmaRow(_ sql: String) throws -> [Int64] {
            let statement = try store.database.prepare(sql)
            defer { statement.reset() }
            guard try statement.step() else { return [] }
            return (0..<3).map { statement.int64(Int32($0)) }
        }
        let logPages = try pragmaRow("SELECT sum(length(cells)), 0, 0 FROM aggregate_log")[0] / 4096
        #expect(logPages >= 200, "the log should span hundreds of pages: \(logPages)")
        // An empty WAL, so that what it holds after the fold is the fold's transaction.
        #expect(try pragmaRow("PRAGMA wal_checkpoint(TRUNCATE)").first == 0)
        try store.flushAggregates()
        #expect(try !store.hasUnfoldedAggregates())
        let framesAfterFold = try pragmaRow("PRAGMA wal_checkpoint(PASSIVE)")[1]
        #expect(framesAfterFold > 0)
        #expect(framesAfterFold < logPages / 4, "the fold wrote \(framesAfterFold) pages for a log of \(logPages)")
        #expect(try pragmaRow("PRAGMA secure_delete").first == 2, "FAST")
        #expect(try ledger.store.periodTotals(tenant: "acme", metric: "api_calls", period: period("2026-04")).usage?.sum == Quantity(40_000))
    }

    @Test func auditFindsDriftInTheMonthlyRollup() throws {
        let ledger = try TestLedger(SQLiteFactory())
        _ = try ledger.store.commit(batch(1, [event(id: "a"), event(quantity: "2.5", id: "b", [("endpoint", "/x")])]))
        #expect(try ledger.store.recomputeAggregates(tenant: "acme", period: period("2026-04")).differences.isEmpty)
        let store = try #require(ledger.store as? SQLiteLedgerStore)
        try store.database.execute("UPDATE usage_monthly SET sum = '4.5' WHERE tenant = 'acme' AND dimension = ''")
        let drift = try ledger.store.recomputeAggregates(tenant: "acme", period: period("2026-04"))
        #expect(drift.differences.map(\.grain) == [.month])
        #expect(drift.differences.first?.stored?.sum == (try Quantity(parsing: "4.5")))
        #expect(drift.differences.first?.recomputed?.sum == (try Quantity(parsing: "3.5")))
    }

    @Test func aVersionOneLedgerGetsItsRollupsWhenOpened() throws {
        let ledger = try TestLedger(SQLiteFactory())
        let events = workload(count: 500, seed: 5, start: at("2026-03-25T00:00:00Z"), spanHours: 24 * 8, tenants: 3)
        _ = try ledger.store.commit(batch(1, now: "2026-04-02T12:00:00Z", events))
        let before = try ledger.store.periodTotals(tenant: "tenant-0", metric: "api_calls", period: period("2026-03"))
        #expect(before.usage != nil)
        // Make the file look like version 1: hourly cells only.
        let store = try #require(ledger.store as? SQLiteLedgerStore)
        try store.database.execute(
            "DELETE FROM usage_daily; DELETE FROM usage_monthly; UPDATE ledger_meta SET value = '1' WHERE key = 'schema_version';")
        #expect(try ledger.store.periodTotals(tenant: "tenant-0", metric: "api_calls", period: period("2026-03")).usage == nil)
        try ledger.reopen()
        #expect(try ledger.store.periodTotals(tenant: "tenant-0", metric: "api_calls", period: period("2026-03")) == before)
        for tenant in 0..<3 {
            for month in ["2026-03", "2026-04"] {
                #expect(try ledger.store.recomputeAggregates(tenant: "tenant-\(tenant)", period: period(month)).differences.isEmpty)
            }
        }
    }

    /// A version-2 file (the same tables, log rows in the first layout) opens, is relabelled, and
    /// its unfolded log rows are folded as they were written.
    @Test func aVersion2FileIsRelabelledAndItsLogFolded() throws {
        let ledger = try TestLedger(SQLiteFactory())
        let store = try #require(ledger.store as? SQLiteLedgerStore)
        var cells = AggregateCells()
        let late = event(quantity: "4", at: "2026-04-13T11:00:00Z", id: "old-row")
        try cells.add(late, fingerprint: Fingerprint(of: late), billedIn: nil, groupBy: ["endpoint"])
        store.statements.insertLog.bind(1, blob: AggregateLogCodec.encode(cells, layout: .flat))
        try store.statements.insertLog.run()
        try store.database.execute("UPDATE ledger_meta SET value = '2' WHERE key = 'schema_version'")
        try ledger.reopen()
        let reopened = try #require(ledger.store as? SQLiteLedgerStore)
        let version = try reopened.database.prepare("SELECT value FROM ledger_meta WHERE key = 'schema_version'")
        defer { version.reset() }
        #expect(try version.step() && version.text(0) == SQLiteSchema.version)
        #expect(try ledger.store.periodTotals(tenant: "acme", metric: "api_calls", period: period("2026-04")).usage?.sum == Quantity(4))
    }

    /// A version-5 file (log rows in the fixed-width layout) opens as version 7: a merging
    /// reader adds an unfolded fixed-width row, the fold at open takes it, and the rows logged
    /// after are compact.
    @Test func aVersion5FileIsRelabelledAndItsFixedRowsRead() throws {
        let ledger = try TestLedger(SQLiteFactory())
        let store = try #require(ledger.store as? SQLiteLedgerStore)
        let old = event(quantity: "4", at: "2026-04-13T11:00:00Z", id: "old-row")
        _ = try store.commit(batch(1, [old]))
        func rows(_ database: SQLiteDatabase) throws -> [[UInt8]] {
            let select = try database.prepare("SELECT cells FROM aggregate_log ORDER BY id")
            defer { select.reset() }
            var markers: [[UInt8]] = []
            while try select.step() { markers.append(Array(select.blob(0).prefix(4))) }
            return markers
        }
        #expect(try rows(store.database) == [[0xFF, 0xFF, 0xFF, 0xFA]])
        // The batch's row as schema version 5 wrote it: the same cells, fixed-width.
        var cells = AggregateCells()
        let select = try store.database.prepare("SELECT cells FROM aggregate_log")
        #expect(try select.step())
        try AggregateLogCodec.decode(select.blob(0), into: &cells)
        select.reset()
        #expect(cells.count == 2)
        let update = try store.database.prepare("UPDATE aggregate_log SET cells = ?1")
        update.bind(1, blob: AggregateLogCodec.encode(cells, layout: .byTenant, fields: .levels))
        try update.run()
        #expect(try rows(store.database) == [[0xFF, 0xFF, 0xFF, 0xFC]])
        func merged() throws -> Quantity? {
            let reader = try SQLiteLedgerStore(path: ledger.location)
            #expect(reader.mergeUnfoldedLogOnRead())
            return try reader.withSnapshot { () throws(LedgerError) in
                try reader.periodTotals(tenant: "acme", metric: "api_calls", period: period("2026-04")).usage?.sum
            }
        }
        #expect(try merged() == Quantity(4))
        try store.database.execute("UPDATE ledger_meta SET value = '5' WHERE key = 'schema_version'")
        try ledger.reopen()
        let reopened = try #require(ledger.store as? SQLiteLedgerStore)
        let version = try reopened.database.prepare("SELECT value FROM ledger_meta WHERE key = 'schema_version'")
        #expect(try version.step() && version.text(0) == "7")
        version.reset()
        #expect(try ledger.store.periodTotals(tenant: "acme", metric: "api_calls", period: period("2026-04")).usage?.sum == Quantity(4))
        _ = try ledger.store.commit(batch(2, [event(quantity: "2.5", at: "2026-04-13T11:30:00Z", id: "new-row")]))
        #expect(try rows(reopened.database) == [[0xFF, 0xFF, 0xFF, 0xFA]])
        #expect(try merged() == (try Quantity(parsing: "6.5")))
        try reopened.foldAggregates()
        #expect(
            try ledger.store.periodTotals(tenant: "acme", metric: "api_calls", period: period("2026-04")).usage?.sum == (try Quantity(parsing: "6.5"))
        )
        let drift = try ledger.store.recomputeAggregates(tenant: "acme", period: period("2026-04"))
        #expect(drift.differences.isEmpty, "\(drift.differences)")
    }

    @Test func aLedgerFromANewerVersionIsRefused() throws {
        let ledger = try TestLedger(SQLiteFactory())
        let store = try #require(ledger.store as? SQLiteLedgerStore)
        try store.database.execute("UPDATE ledger_meta SET value = '9' WHERE key = 'schema_version'")
        store.close()
        #expect(throws: LedgerError.self) { try SQLiteLedgerStore(path: ledger.location) }
    }

    @Test func theLogIsFoldedAfterAThousandBatchesOnTheSameCells() throws {
        let ledger = try TestLedger(SQLiteFactory())
        let store = try #require(ledger.store as? SQLiteLedgerStore)
        func logRows() throws -> Int64 {
            let select = try store.database.prepare("SELECT COUNT(*) FROM aggregate_log")
            defer { select.reset() }
            _ = try select.step()
            return select.int64(0)
        }
        func hourlyCount() throws -> Int64 {
            let select = try store.database.prepare("SELECT COALESCE(SUM(count), 0) FROM usage_hourly WHERE dimension = ''")
            defer { select.reset() }
            _ = try select.step()
            return select.int64(0)
        }
        let cap = UInt64(SQLiteLedgerStore.maximumLogRows)
        for sequence in 1..<cap { _ = try store.commit(batch(sequence, [event(id: "e\(sequence)")])) }
        // Two hourly cells (the total and the endpoint group), far below the cell threshold: still buffered.
        #expect(try logRows() == Int64(cap - 1))
        #expect(try hourlyCount() == 0)
        _ = try store.commit(batch(cap, [event(id: "last")]))
        #expect(try logRows() == 0)
        #expect(try hourlyCount() == Int64(cap))
    }

    /// A collector and a `tallyctl audit` on the same file: each logged batch is folded exactly
    /// once, whichever process folds it.
    @Test func twoProcessesOnOneFileFoldEachBatchOnce() throws {
        let ledger = try TestLedger(SQLiteFactory())
        let collector = ledger.store
        _ = try collector.commit(batch(1, [event(id: "a"), event(id: "b")]))
        let audit = try SQLiteLedgerStore(path: ledger.location, configuration: TestLedger.configuration)  // folds batch 1
        defer { audit.close() }
        _ = try collector.commit(batch(2, [event(id: "c")]))
        #expect(try audit.periodTotals(tenant: "acme", metric: "api_calls", period: period("2026-04")).usage?.count == 3)
        #expect(try collector.periodTotals(tenant: "acme", metric: "api_calls", period: period("2026-04")).usage?.count == 3)
        _ = try collector.commit(batch(3, [event(id: "d")]))
        #expect(try collector.periodTotals(tenant: "acme", metric: "api_calls", period: period("2026-04")).usage?.count == 4)
        #expect(try audit.periodTotals(tenant: "acme", metric: "api_calls", period: period("2026-04")).usage?.count == 4)
        #expect(try audit.recomputeAggregates(tenant: "acme", period: period("2026-04")).differences.isEmpty)
    }

    /// Auditing every tenant at once is one scan of the period, and finds what per-tenant audits find.
    @Test func anAllTenantAuditAgreesWithPerTenantAudits() throws {
        let ledger = try TestLedger(SQLiteFactory())
        let events = workload(count: 1500, seed: 9, start: at("2026-04-01T00:00:00Z"), spanHours: 24 * 9, tenants: 5)
        _ = try ledger.store.commit(batch(1, now: "2026-04-10T00:00:00Z", events))
        let all = try ledger.store.recomputeAggregates(tenant: nil, period: period("2026-04"))
        #expect(all.differences.isEmpty && all.tenant == nil)
        var perTenant = 0
        for tenant in 0..<5 {
            perTenant += try ledger.store.recomputeAggregates(tenant: "tenant-\(tenant)", period: period("2026-04")).cellsCompared
        }
        #expect(all.cellsCompared == perTenant && perTenant > 0)
        let store = try #require(ledger.store as? SQLiteLedgerStore)
        try store.database.execute("UPDATE usage_daily SET count = count + 1 WHERE tenant = 'tenant-3' AND dimension = ''")
        let drifted = try ledger.store.recomputeAggregates(tenant: nil, period: period("2026-04"))
        #expect(!drifted.differences.isEmpty)
        #expect(drifted.differences.allSatisfy { $0.key.tenant == "tenant-3" && $0.grain == .day })
    }

    /// A key's hash is made once and remade whenever a field changes: a key changed in place (as
    /// rolling up does) is equal to, hashes as and finds the same cell as a key made with those
    /// fields; keys differing in any one field are different cells.
    @Test func aChangedCellKeyIsTheKeyOfItsNewFields() throws {
        let base = AggregateCellKey(tenant: "acme", metric: "api_calls", hour: 492_000, dimension: "region", value: "eu")
        let day = base.rolledUp(to: .day)
        let made = AggregateCellKey(
            tenant: "acme", metric: "api_calls", hour: AggregateGrain.day.bucket(of: 492_000), dimension: "region", value: "eu")
        #expect(day == made && day.hashValue == made.hashValue)
        var changed = base
        changed.tenant = "other"
        changed.metric = "bytes"
        changed.hour = 7
        changed.dimension = ""
        changed.value = ""
        changed.billedIn = BillingPeriod(year: 2026, month: 3)
        let fresh = AggregateCellKey(tenant: "other", metric: "bytes", hour: 7, billedIn: BillingPeriod(year: 2026, month: 3))
        #expect(changed == fresh && changed.hashValue == fresh.hashValue)
        let cells: [AggregateCellKey: Int] = [made: 1, fresh: 2]
        #expect(cells[day] == 1 && cells[changed] == 2)
        var variants: [AggregateCellKey] = []
        for field in 0..<6 {
            var key = base
            switch field {
            case 0: key.tenant = "acmf"
            case 1: key.metric = "api_callz"
            case 2: key.hour += 1
            case 3: key.dimension = "regioN"
            case 4: key.value = "us"
            default: key.billedIn = BillingPeriod(year: 2026, month: 4)
            }
            #expect(key != base, "field \(field)")
            variants.append(key)
        }
        #expect(Set(variants + [base]).count == 7)
    }
}
