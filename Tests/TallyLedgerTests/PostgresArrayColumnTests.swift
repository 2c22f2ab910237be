import NIOCore
import PostgresNIO
import TallyCore
import Testing

@testable import TallyLedger

/// The array binds the batch statements write element by element (``PostgresArrayColumn``) are
/// byte for byte what postgres-nio's own encoding of the whole Swift array sends, which
/// PostgreSQL's `array_recv` reads: for every element type, empty and not, with multi-byte and
/// empty strings.
@Suite struct PostgresArrayColumnTests {
    func bytes(_ data: PostgresData) -> [UInt8] { data.value.map { Array($0.readableBytesView) } ?? [] }

    /// The column's bind beside postgres-nio's bind of the same values.
    func expectSame(_ column: consuming PostgresArrayColumn, _ reference: PostgresData) {
        let bind = column.bind()
        #expect(bind.type == reference.type)
        #expect(bind.formatCode == .binary)
        #expect(bytes(bind) == bytes(reference))
    }

    @Test(arguments: [0, 1, 7, 1000])
    func eachElementTypeIsEncodedAsPostgresNIOEncodesTheArray(count: Int) throws {
        let texts = (0..<count).map { $0 % 5 == 0 ? "" : "t-\($0)-é€\(String(repeating: "x", count: $0 % 40))" }
        let blobs = (0..<count).map { row in (0..<(row % 23)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ row) } }
        let prints = (0..<count).map { Fingerprint(high: UInt64($0) &* 0x9E37_79B9_7F4A_7C15, low: ~UInt64($0)) }
        let longs = (0..<count).map { Int64($0) &* -7_000_000_000_123 }
        let ints = (0..<count).map { Int32(truncatingIfNeeded: $0 &* -100_003) }
        let flags = (0..<count).map { $0 % 3 == 0 }

        var text = PostgresArrayColumn(of: .text)
        for value in texts { text.append(value) }
        #expect(text.count == count)
        expectSame(text, try PostgresSession.bind(texts))

        var blob = PostgresArrayColumn(of: .bytea, reservingBytes: 3)
        for value in blobs { blob.append(bytes: value) }
        expectSame(blob, try PostgresSession.bind(blobs.map { ByteBuffer(bytes: $0) }))

        var print = PostgresArrayColumn(of: .bytea)
        for value in prints { print.append(value) }
        expectSame(print, try PostgresSession.bind(prints.map { ByteBuffer(bytes: $0.bytes) }))

        var long = PostgresArrayColumn(of: .int8)
        for value in longs { long.append(value) }
        expectSame(long, try PostgresSession.bind(longs))

        var int = PostgresArrayColumn(of: .int4)
        for value in ints { int.append(value) }
        expectSame(int, try PostgresSession.bind(ints))

        var flag = PostgresArrayColumn(of: .bool)
        for value in flags { flag.append(value) }
        expectSame(flag, try PostgresSession.bind(flags))
    }
}
