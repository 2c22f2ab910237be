import Testing
@testable import TallyCore

/// The one byte codec every format goes through.
@Suite struct ByteCodingTests {
    func read<T>(_ bytes: [UInt8], _ body: (inout ByteReader) -> T) -> T {
        bytes.withUnsafeBytes { raw in
            var reader = ByteReader(raw)
            return body(&reader)
        }
    }

    @Test(arguments: [UInt128(0), 1, 127, 128, 300, 16_383, 16_384, UInt128(UInt64.max), UInt128.max])
    func varintsRoundTrip(value: UInt128) {
        var out: [UInt8] = []
        out.appendVarint(value)
        #expect(out.count == max(1, (128 - value.leadingZeroBitCount + 6) / 7))
        #expect(read(out) { $0.varint(shortestOnly: true) } == value)
        #expect(read(out + [0xAA]) { reader in reader.varint().map { _ in reader.remaining } } == 1)
    }

    @Test func varintKnownBytes() {
        var out: [UInt8] = []
        out.appendVarint(UInt64(300))
        #expect(out == [0xAC, 0x02])
        out = []
        out.appendVarint(UInt64.max)
        #expect(out == [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01])
    }

    @Test func badVarintsAreRefused() {
        // Runs out of bytes.
        #expect(read([0x80, 0x80]) { $0.varint() } == nil)
        // A needless trailing zero byte: accepted leniently, refused when only the shortest form counts.
        #expect(read([0x81, 0x00]) { $0.varint() } == 1)
        #expect(read([0x81, 0x00]) { $0.varint(shortestOnly: true) } == nil)
        // More than 128 bits.
        #expect(read([UInt8](repeating: 0xFF, count: 18) + [0x04]) { $0.varint() } == nil)
        #expect(read([UInt8](repeating: 0xFF, count: 18) + [0x03]) { $0.varint() } == UInt128.max)
        #expect(read([UInt8](repeating: 0x80, count: 19) + [0x01]) { $0.varint() } == nil)
        // A byte budget.
        #expect(read([0x80, 0x80, 0x01]) { $0.varint(maxBytes: 2) } == nil)
    }

    /// `ByteReader.varint`'s in-place path answers as the general decoder and reads as many
    /// bytes, on random byte runs (ends of every length, needless zero bytes, byte budgets) and
    /// on every value's encoding around the 63-bit edge.
    @Test func varintsReadInPlaceAgreeWithTheGeneralDecoder() {
        func general(_ bytes: [UInt8], maxBytes: Int, shortestOnly: Bool) -> (UInt128?, Int) {
            var index = 0
            let value = LEB128.decode(maxBytes: maxBytes, shortestOnly: shortestOnly) {
                guard index < bytes.count else { return nil }
                defer { index += 1 }
                return bytes[index]
            }
            return (value, index)
        }
        var random = SplitMix64(seed: 29)
        var cases: [[UInt8]] = []
        for _ in 0..<4_000 {
            let length = Int(random.next() % 22)
            cases.append(
                (0..<length).map { _ in
                    switch random.next() % 4 {
                    case 0: 0x80
                    case 1: 0x00
                    case 2: 0xFF
                    default: UInt8(truncatingIfNeeded: random.next())
                    }
                })
        }
        for shift in 55..<70 {
            for delta in [-1, 0, 1] {
                var out: [UInt8] = []
                out.appendVarint((UInt128(1) << UInt128(shift)) &+ UInt128(bitPattern: Int128(delta)))
                cases.append(out)
            }
        }
        for bytes in cases {
            for maxBytes in [0, 1, 2, 9, 10, 19] {
                for shortestOnly in [false, true] {
                    let expected = general(bytes, maxBytes: maxBytes, shortestOnly: shortestOnly)
                    let found = read(bytes) { reader in (reader.varint(maxBytes: maxBytes, shortestOnly: shortestOnly), reader.index) }
                    #expect(found.0 == expected.0, "\(bytes) \(maxBytes) \(shortestOnly)")
                    if expected.0 != nil { #expect(found.1 == expected.1, "\(bytes) \(maxBytes) \(shortestOnly)") }
                }
            }
        }
    }

    @Test(arguments: [Int64.min, -1, 0, 1, 63, -64, Int64.max])
    func zigzag(value: Int64) {
        #expect(ZigZag.decode(ZigZag.encode(value)) == value)
        #expect(ZigZag.decode(ZigZag.encode(Int128(value) * 1_000_000_000)) == Int128(value) * 1_000_000_000)
        #expect(ZigZag.encode(Int64(-1)) == 1 && ZigZag.encode(Int64(1)) == 2)
    }

    @Test func fixedWidthInBothByteOrders() {
        var out: [UInt8] = []
        out.appendLittleEndian(0x0102_0304, bytes: 4)
        out.appendBigEndian(0x0102_0304, bytes: 4)
        out.appendBigEndian(Int128(-2))
        #expect(Array(out[0..<8]) == [4, 3, 2, 1, 1, 2, 3, 4])
        #expect(Array(out[8...]) == [UInt8](repeating: 0xFF, count: 15) + [0xFE])
        read(out) { reader in
            #expect(reader.littleEndian(bytes: 4) == 0x0102_0304)
            #expect(reader.bigEndian(bytes: 4) == 0x0102_0304)
            #expect(reader.bigEndianInt128() == -2)
            #expect(reader.remaining == 0 && reader.bigEndian(bytes: 1) == nil)
        }
    }

    @Test(arguments: 0...8)
    func bigEndianOfEveryWidthKeepsTheLowBytes(width: Int) {
        let value: UInt64 = 0x0102_0304_0506_0708
        var out: [UInt8] = [0xEE]
        out.appendBigEndian(value, bytes: width)
        #expect(out == [0xEE] + Array([1, 2, 3, 4, 5, 6, 7, 8].suffix(width)))
        let low = width == 8 ? value : value & ((1 << UInt64(8 * width)) - 1)
        #expect(read(Array(out.dropFirst())) { $0.bigEndian(bytes: width) } == low)
    }

    @Test func stringsWithEitherLengthPrefix() {
        var out: [UInt8] = []
        out.appendVarintString("café")
        out.appendString32("x")
        #expect(out == [5] + Array("café".utf8) + [0, 0, 0, 1, 0x78])
        read(out) { reader in
            let length = reader.varint().map(Int.init) ?? -1
            #expect(reader.utf8(count: length) == "café")
            #expect(reader.bigEndian(bytes: 4) == 1 && reader.utf8(count: 1) == "x")
            #expect(reader.utf8(count: 1) == nil)
        }
        #expect(read([0xC3]) { $0.utf8(count: 1) } == nil, "invalid UTF-8")
    }

    /// `UTF8Text.decode` (ASCII skips the generic validation) accepts and refuses exactly what
    /// `String(validating:as:)` does: every 1- and 2-byte sequence, and random longer ones mixing
    /// ASCII with lead, continuation and invalid bytes.
    @Test func utf8TextAgreesWithTheStandardLibrary() {
        func check(_ bytes: [UInt8]) {
            bytes.withUnsafeBufferPointer { buffer in
                #expect(UTF8Text.decode(buffer) == String(validating: buffer, as: UTF8.self), "\(bytes)")
            }
        }
        for first in 0...255 {
            check([UInt8(first)])
            for second in 0...255 { check([UInt8(first), UInt8(second)]) }
        }
        var random = SplitMix64(seed: 11)
        let palette: [UInt8] = [0x41, 0x7F, 0x80, 0xBF, 0xC0, 0xC3, 0xA9, 0xE2, 0x82, 0xAC, 0xED, 0xA0, 0xF0, 0x9F, 0x98, 0x80, 0xF4, 0x90, 0xFF]
        for _ in 0..<20_000 {
            let count = Int(random.next() % 12)
            check((0..<count).map { _ in palette[Int(random.next() % UInt64(palette.count))] })
        }
    }
}
