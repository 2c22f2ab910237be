import TallyCore
import TallyWire
import Testing

/// One row of the payload table: a batch payload (the body of a batch frame after its sequence)
/// and the exact error the payload decoder must give (SPEC §5, §9).
struct PayloadRow: Sendable, CustomTestStringConvertible {
    let name: String
    let payload: [UInt8]
    let error: WireError

    init(_ name: String, _ payload: [UInt8], _ code: WireErrorCode, _ message: String) {
        self.name = name
        self.payload = payload
        self.error = WireError(code, message)
    }

    var testDescription: String { name }
}

/// Payloads written by hand, field by field, per SPEC §5.
enum PayloadBytes {
    static let time: Int64 = 1_768_467_600_000_000  // 2026-01-15T09:00:00Z

    /// A columns section; by default one event (tenant `acme`, metric `api_calls`, quantity 1,
    /// text id `p-1`, no properties).
    static func columns(
        tenants: [[UInt8]] = [Array("acme".utf8)], tenantTableSize: UInt64? = nil, metrics: [String] = ["api_calls"],
        keys: [String] = [], values: [[String]] = [], tenantColumn: [UInt8] = [0], metricColumn: [UInt64] = [0],
        times: [Int64] = [time], flags: [UInt8] = [3], quantities: [UInt128] = [2], propertyColumns: [[UInt64]] = [],
        textIds: [String] = ["p-1"], tail: [UInt8] = []
    ) -> [UInt8] {
        var out: [UInt8] = []
        out.appendVarint(tenantTableSize ?? UInt64(tenants.count))
        for tenant in tenants {
            out.appendVarint(UInt64(tenant.count))
            out += tenant
        }
        out.appendVarint(UInt64(metrics.count))
        for metric in metrics { out.appendVarintString(metric) }
        out.appendVarint(UInt64(keys.count))
        for key in keys { out.appendVarintString(key) }
        for table in values {
            out.appendVarint(UInt64(table.count))
            for value in table { out.appendVarintString(value) }
        }
        out += tenantColumn
        for index in metricColumn { out.appendVarint(index) }
        var previous: Int64 = 0
        for time in times {
            out.appendVarint(ZigZag.encode(time &- previous))
            previous = time
        }
        out += flags
        for quantity in quantities { out.appendVarint(quantity) }
        for column in propertyColumns {
            for index in column { out.appendVarint(index) }
        }
        for id in textIds { out.appendVarintString(id) }
        return out + tail
    }

    /// The envelope (SPEC §5.1) around a columns section.
    static func envelope(
        version: UInt8 = 1, count: UInt32 = 1, encoding: UInt8 = 0, rawLength: UInt32? = nil, storedLength: UInt32? = nil,
        columns: [UInt8], uuids: [UInt8] = []
    ) -> [UInt8] {
        var out = [version]
        out.appendBigEndian(UInt64(count), bytes: 4)
        out.append(encoding)
        out.appendBigEndian(UInt64(rawLength ?? UInt32(columns.count)), bytes: 4)
        out.appendBigEndian(UInt64(storedLength ?? UInt32(columns.count)), bytes: 4)
        return out + columns + uuids
    }

    static let single = columns()

    static func compress(_ bytes: [UInt8]) -> [UInt8] {
        (try? ZstdCompressor(level: 3).compress(bytes)) ?? []
    }

    /// A zstd envelope whose header declares `rawLength` for the frame `frame`.
    static func zstd(_ frame: [UInt8], rawLength: UInt32, count: UInt32 = 1) -> [UInt8] {
        envelope(count: count, encoding: 1, rawLength: rawLength, storedLength: UInt32(frame.count), columns: frame)
    }

    /// 64 MiB of zeros in a few KiB: a decompression bomb.
    static let bomb: [UInt8] = (try? ZstdCompressor(level: 1).compress([UInt8](repeating: 0, count: 64 << 20))) ?? []

    /// The same frame with its content size taken out of the header (a frame may omit it), so
    /// only the output cap can stop it; nil if the frame is not of the shape expected.
    static func withoutContentSize(_ frame: [UInt8]) -> [UInt8]? {
        guard frame.count > 6, Array(frame[0..<4]) == [0x28, 0xB5, 0x2F, 0xFD] else { return nil }
        let descriptor = frame[4]
        guard descriptor & 0x20 == 0 else { return nil }  // single-segment frames must carry it
        let dictionaryBytes = [0, 1, 2, 4][Int(descriptor & 0x03)]
        let sizeBytes = [0, 2, 4, 8][Int(descriptor >> 6)]
        let headerEnd = 6 + dictionaryBytes
        return Array(frame[0..<4]) + [descriptor & 0x3F] + Array(frame[5..<headerEnd]) + Array(frame[(headerEnd + sizeBytes)...])
    }

    static let hiddenBomb: [UInt8] = withoutContentSize(bomb) ?? []

    static var badChecksum: [UInt8] {
        var frame = compress(single)
        frame[frame.count - 1] ^= 0xFF
        return frame
    }

    static let maxUnits = Int128.max / Quantity.nanosPerUnit
}

enum PayloadRows {
    static func malformed(_ what: String) -> String { "batch payload: " + what }

    static let rows: [PayloadRow] = {
        let single = PayloadBytes.single
        let frame = PayloadBytes.compress(single)
        let second = PayloadBytes.compress([0])
        return [
            // envelope
            PayloadRow("empty", [], .malformedPayload, malformed("shorter than its 14-byte header")),
            PayloadRow(
                "header cut at 13 bytes", Array(PayloadBytes.envelope(columns: single).prefix(13)), .malformedPayload,
                malformed("shorter than its 14-byte header")),
            PayloadRow(
                "version 0", PayloadBytes.envelope(version: 0, columns: single), .unsupportedVersion, "batch payload version 0 is not supported"),
            PayloadRow(
                "version 2", PayloadBytes.envelope(version: 2, columns: single), .unsupportedVersion, "batch payload version 2 is not supported"),
            PayloadRow(
                "columns encoding 2", PayloadBytes.envelope(encoding: 2, columns: single), .malformedPayload, malformed("unknown columns encoding 2")),
            // event count
            PayloadRow(
                "count one over the limit", PayloadBytes.envelope(count: 10_001, columns: single), .tooManyEvents,
                "a batch of 10001 events exceeds the limit of 10000"),
            PayloadRow(
                "count 0xffffffff", PayloadBytes.envelope(count: .max, columns: single), .tooManyEvents,
                "a batch of 4294967295 events exceeds the limit of 10000"),
            PayloadRow(
                "count one more than the columns hold", PayloadBytes.envelope(count: 2, columns: single), .malformedPayload,
                malformed("index 3536935200000000 out of range in the metric column")),
            PayloadRow(
                "count 0 with an event's columns", PayloadBytes.envelope(count: 0, columns: single), .malformedPayload,
                malformed("16 bytes after the last column")),
            PayloadRow(
                "count far beyond the columns", PayloadBytes.envelope(count: 1_000, columns: single), .malformedPayload,
                malformed("1000 events cannot fit the columns")),
            // lengths and compression
            PayloadRow(
                "declared size one over the limit", PayloadBytes.zstd(frame, rawLength: 64 << 20 + 1), .payloadTooLarge,
                "a batch of 67108865 bytes decompressed exceeds the limit of 67108864"),
            PayloadRow(
                "raw lengths differ", PayloadBytes.envelope(rawLength: UInt32(single.count + 1), columns: single), .malformedPayload,
                malformed("raw columns whose two lengths differ")),
            PayloadRow(
                "stored length past the end", PayloadBytes.envelope(storedLength: UInt32(single.count + 1), columns: single), .malformedPayload,
                malformed("the columns section is cut short")),
            PayloadRow(
                "raw columns flagged zstd", PayloadBytes.envelope(encoding: 1, columns: single), .malformedPayload,
                malformed("zstd: not a zstd frame")),
            PayloadRow(
                "zstd columns flagged raw", PayloadBytes.envelope(rawLength: UInt32(single.count), storedLength: UInt32(frame.count), columns: frame),
                .malformedPayload, malformed("raw columns whose two lengths differ")),
            PayloadRow(
                "zstd bomb declared by its frame", PayloadBytes.zstd(PayloadBytes.bomb, rawLength: 1024), .payloadTooLarge,
                "the columns decompress to more than the declared 1024 bytes"),
            PayloadRow(
                "zstd bomb hiding its size", PayloadBytes.zstd(PayloadBytes.hiddenBomb, rawLength: 1024), .payloadTooLarge,
                "the columns decompress to more than the declared 1024 bytes"),
            PayloadRow(
                "zstd shorter than declared", PayloadBytes.zstd(frame, rawLength: UInt32(single.count + 1)), .malformedPayload,
                malformed("the columns decompress to \(single.count) bytes, not the declared \(single.count + 1)")),
            PayloadRow(
                "zstd checksum wrong", PayloadBytes.zstd(PayloadBytes.badChecksum, rawLength: UInt32(single.count)), .malformedPayload,
                malformed("zstd: Restored data doesn't match checksum")),
            PayloadRow(
                "zstd frame cut short", PayloadBytes.zstd(Array(frame.dropLast(6)), rawLength: UInt32(single.count)), .malformedPayload,
                malformed("zstd: the input ends inside a frame")),
            PayloadRow(
                "two zstd frames", PayloadBytes.zstd(frame + second, rawLength: UInt32(single.count)), .malformedPayload,
                malformed("zstd: \(second.count) bytes follow the frame (one frame is allowed)")),
            // columns
            PayloadRow(
                "a table claiming more entries than bytes", PayloadBytes.envelope(columns: PayloadBytes.columns(tenantTableSize: 1_000)),
                .malformedPayload,
                malformed("the tenant table claims 1000 entries")),
            PayloadRow(
                "invalid UTF-8 in the tenant table", PayloadBytes.envelope(columns: PayloadBytes.columns(tenants: [[0x61, 0xFF]])), .malformedPayload,
                malformed("bad string in the tenant table")),
            PayloadRow(
                "no tenant table", PayloadBytes.envelope(columns: PayloadBytes.columns(tenants: [])), .malformedPayload,
                malformed("events without a tenant or metric table")),
            PayloadRow(
                "tenant index out of range", PayloadBytes.envelope(columns: PayloadBytes.columns(tenantColumn: [1])), .malformedPayload,
                malformed("index 1 out of range in the tenant column")),
            PayloadRow(
                "varint not in its shortest form", PayloadBytes.envelope(columns: PayloadBytes.columns(tenantColumn: [0x80, 0x00])),
                .malformedPayload,
                malformed("bad or missing varint in the tenant column")),
            PayloadRow(
                "property keys out of order",
                PayloadBytes.envelope(columns: PayloadBytes.columns(keys: ["b", "a"], values: [["x"], ["y"]], propertyColumns: [[1], [1]])),
                .malformedPayload, malformed("property keys are not distinct and in byte order")),
            PayloadRow(
                "property key twice",
                PayloadBytes.envelope(columns: PayloadBytes.columns(keys: ["a", "a"], values: [["x"], ["y"]], propertyColumns: [[1], [1]])),
                .malformedPayload, malformed("property keys are not distinct and in byte order")),
            PayloadRow(
                "property value index out of range",
                PayloadBytes.envelope(columns: PayloadBytes.columns(keys: ["region"], values: [["eu"]], propertyColumns: [[2]])),
                .malformedPayload, malformed("index 2 out of range in the property column")),
            PayloadRow(
                "reserved flag bits", PayloadBytes.envelope(columns: PayloadBytes.columns(flags: [0x0B])), .malformedPayload,
                malformed("reserved bits set in the flags of event 0")),
            PayloadRow(
                "flags column cut short", PayloadBytes.envelope(columns: PayloadBytes.columns(flags: [], quantities: [], textIds: [])),
                .malformedPayload,
                malformed("the flags column is cut short")),
            PayloadRow(
                "whole quantity sent as nano-units",
                PayloadBytes.envelope(columns: PayloadBytes.columns(flags: [0x07], quantities: [ZigZag.encode(Int128(1_000_000_000))])),
                .malformedPayload, malformed("a whole quantity sent as nano-units")),
            PayloadRow(
                "quantity units out of range",
                PayloadBytes.envelope(columns: PayloadBytes.columns(quantities: [ZigZag.encode(PayloadBytes.maxUnits + 1)])),
                .malformedPayload, malformed("quantity \(PayloadBytes.maxUnits + 1) units is out of range")),
            PayloadRow(
                "canonical UUID sent as text",
                PayloadBytes.envelope(columns: PayloadBytes.columns(textIds: ["0f8fad5b-d9cb-469f-a165-70867728950e"])), .malformedPayload,
                malformed("a canonical UUID sent as text")),
            PayloadRow(
                "text id missing", PayloadBytes.envelope(columns: PayloadBytes.columns(textIds: [])), .malformedPayload,
                malformed("bad string in the id column")),
            PayloadRow(
                "a byte after the last column", PayloadBytes.envelope(columns: PayloadBytes.columns(tail: [0])), .malformedPayload,
                malformed("1 bytes after the last column")),
            // UUID section
            PayloadRow(
                "UUID section cut short",
                PayloadBytes.envelope(columns: PayloadBytes.columns(flags: [1], textIds: []), uuids: [UInt8](repeating: 7, count: 15)),
                .malformedPayload, malformed("the UUID section is cut short")),
            PayloadRow(
                "a byte after the UUID section", PayloadBytes.envelope(columns: single, uuids: [0]), .malformedPayload,
                malformed("1 bytes after the UUID section")),
        ]
    }()
}
