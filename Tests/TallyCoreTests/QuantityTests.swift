import Testing
@testable import TallyCore

@Suite struct QuantityTests {
    @Test(arguments: [
        ("1", "1"), ("1.0", "1"), ("1e0", "1"), ("10E-1", "1"), ("0.1e1", "1"), ("100e-2", "1"),
        ("0", "0"), ("-0", "0"), ("0.000", "0"), ("0e5", "0"), ("12.345000", "12.345"), ("1.2345e1", "12.345"),
        ("0.000000001", "0.000000001"), ("1e-9", "0.000000001"), ("120000", "120000"), ("1.5E+3", "1500"),
        ("-2.50", "-2.5"), ("999999999999999.999999999", "999999999999999.999999999"),
        ("0.10000000000000000000000000000000000000000000", "0.1"),
    ])
    func spellingsParseToTheCanonicalText(_ text: String, _ canonical: String) throws {
        #expect(try Quantity(parsing: text).description == canonical)
    }

    @Test(arguments: ["", "-", "+1", ".5", "5.", "1e", "1e+", "01", "1.2.3", "abc", "1 ", " 1", "0x10", "NaN", "Infinity", "1,5"])
    func malformedTextIsRefused(_ text: String) {
        #expect(throws: QuantityError.malformed(text)) { try Quantity(parsing: text) }
    }

    @Test(arguments: ["0.0000000001", "1e-10", "1.0000000001", "123456789012345678901234567890123456789.5"])
    func morePrecisionThanNineDecimalsIsRefusedNotRounded(_ text: String) {
        #expect(throws: QuantityError.tooPrecise(text)) { try Quantity(parsing: text) }
    }

    @Test(arguments: ["1e30", "1e100000", "170141183460469231731687303716"])
    func outOfRangeIsRefused(_ text: String) {
        #expect(throws: QuantityError.outOfRange(text)) { try Quantity(parsing: text) }
    }

    @Test func checkedArithmeticThrowsInsteadOfWrapping() throws {
        let big = Quantity(nanos: .max - 5)
        #expect(throws: ArithmeticOverflow.self) { try big.adding(Quantity(1)) }
        #expect(throws: ArithmeticOverflow.self) { try Quantity(nanos: .min).subtracting(Quantity(1)) }
        #expect(try Quantity(1).adding(Quantity(nanos: 5)).description == "1.000000005")
    }

    @Test func canonicalTextRoundTrips() throws {
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        for _ in 0..<2000 {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            let nanos = Int128(Int64(bitPattern: state)) * Int128(state % 1000)
            let quantity = Quantity(nanos: nanos)
            #expect(try Quantity(parsing: quantity.description) == quantity)
        }
    }
}
