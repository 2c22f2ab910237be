import Testing
import TallyCore
@testable import TallyPricing

@Suite("Money")
struct MoneyTests {
    static let halfEvenCases: [(String, Currency, String)] = [
        ("0.125", .usd, "0.12"),  // tie, 2 is even: down
        ("0.135", .usd, "0.14"),  // tie, 3 is odd: up
        ("2.675", .usd, "2.68"),
        ("2.665", .usd, "2.66"),
        ("0.1251", .usd, "0.13"),  // above the tie
        ("0.1249", .usd, "0.12"),
        ("0.005", .usd, "0.00"),
        ("0.015", .usd, "0.02"),
        ("-0.125", .usd, "-0.12"),
        ("-0.135", .usd, "-0.14"),
        ("70", .usd, "70.00"),
        ("0.5", .jpy, "0"),
        ("1.5", .jpy, "2"),
        ("2.5", .jpy, "2"),
        ("1500.45", .jpy, "1500"),
        ("0.0005", .kwd, "0.000"),
        ("0.0015", .kwd, "0.002"),
        ("0.000000000001", .eur, "0.00"),
    ]

    @Test("half-even rounding to minor units", arguments: halfEvenCases)
    func halfEven(_ input: String, _ currency: Currency, _ expected: String) throws {
        let money = try Money(currency: currency, parsing: input)
        #expect(try money.roundedForInvoiceLine().amountText == expected)
    }

    @Test("proration rounds once, half-even")
    func proration() throws {
        let fee = try Money(currency: .usd, parsing: "10.00")
        #expect(try fee.roundedForInvoiceLine(times: 1, over: 3).amountText == "3.33")
        #expect(try fee.roundedForInvoiceLine(times: 2, over: 3).amountText == "6.67")
        #expect(try fee.roundedForInvoiceLine(times: 1, over: 8).amountText == "1.25")
        // 0.05 / 8 = 0.00625 -> 0.01; 0.20 / 16 = 0.0125 -> 0.01 (tie to even)
        #expect(try Money(currency: .usd, parsing: "0.20").roundedForInvoiceLine(times: 1, over: 16).amountText == "0.01")
    }

    @Test("prices parse exactly; bad text is refused with a reason")
    func parsing() throws {
        #expect(try UnitPrice(parsing: "0.0000125").picos == 12_500_000)
        #expect(try UnitPrice(parsing: "0.001").description == "0.001")
        #expect(try UnitPrice(parsing: "5").description == "5")
        #expect(try UnitPrice(parsing: "0.100000000000000").description == "0.1")  // extra zeros are fine
        for bad in ["", "abc", "1e3", ".5", "5.", "1.2.3", "0.0000000000001", "+1", "1,5"] {
            #expect(throws: DecimalTextError.self) { try UnitPrice(parsing: bad) }
        }
        #expect(throws: DecimalTextError.self) { try UnitPrice(parsing: "999999999999999999999999999999999999999") }
    }

    @Test("formatting keeps the currency's minor digits and exact extra digits")
    func formatting() throws {
        #expect(try Money(currency: .usd, parsing: "70").description == "70.00 USD")
        #expect(try Money(currency: .jpy, parsing: "1500").description == "1500 JPY")
        #expect(try Money(currency: .usd, parsing: "0.0000125").amountText == "0.0000125")
        #expect(try Money(currency: .usd, parsing: "-3.5").amountText == "-3.50")
        #expect(try Money(currency: .usd, parsing: "3.10").minorUnits == 310)
        #expect(try Money(currency: .usd, parsing: "3.105").minorUnits == nil)
    }

    @Test("decimal text: every magnitude and scale formats as the plain quotient and remainder, and parses back")
    func decimalTextRoundTrips() throws {
        // The formatter spelled the simple way (String of the 128-bit quotient and remainder).
        func reference(_ value: Int128, scale: Int, minimumFractionDigits: Int) -> String {
            var divisor: UInt128 = 1
            for _ in 0..<scale { divisor *= 10 }
            var fraction = String(value.magnitude % divisor)
            fraction = String(repeating: "0", count: scale - fraction.count) + fraction
            while fraction.count > minimumFractionDigits, fraction.last == "0" { fraction.removeLast() }
            let whole = "\(value < 0 ? "-" : "")\(value.magnitude / divisor)"
            return fraction.isEmpty ? whole : whole + "." + fraction
        }
        var generator = SystemRandomNumberGenerator()
        var values: [Int128] = [0, 1, -1, 9, 10, 99, 100, Int128(UInt64.max), Int128(UInt64.max) + 1, -Int128(UInt64.max) - 1, .max, .min + 1]
        for digits in 1...38 {
            var power: Int128 = 1
            for _ in 0..<digits { power *= 10 }
            values += [power, power - 1, -power, Int128.random(in: -power...power, using: &generator)]
        }
        for value in values {
            for scale in [1, 2, 6, 12] {
                for minimum in [0, 2, scale] {
                    let text = ExactDecimalText.format(value, scale: scale, minimumFractionDigits: minimum)
                    #expect(text == reference(value, scale: scale, minimumFractionDigits: minimum), "\(value) scale \(scale) min \(minimum)")
                    #expect(try ExactDecimalText.parse(text, scale: scale) == value, "\(text)")
                }
            }
        }
    }

    @Test("overflow is an error, never a wrap")
    func overflow() throws {
        let huge = Money(currency: .usd, scaledAmount: Int128.max - 1)
        #expect(throws: MoneyError.self) { try huge.adding(Money(currency: .usd, scaledAmount: 2)) }
        #expect(throws: MoneyError.self) { try Money(currency: .usd, scaledAmount: Int128.min + 1).subtracting(huge) }
        #expect(throws: MoneyError.self) {
            try Money.product(Quantity(nanos: Int128.max / 2), UnitPrice(parsing: "0.001"), in: .usd)
        }
        #expect(throws: MoneyError.self) { try huge.roundedForInvoiceLine(times: 3, over: 2) }
        // Inside the range: 10^15 units (one event's limit) × $0.01 is exact.
        let product = try Money.product(Quantity(1_000_000_000_000_000), UnitPrice(parsing: "0.01"), in: .usd)
        #expect(try product.roundedForInvoiceLine().amountText == "10000000000000.00")
    }

    @Test("amounts in two currencies do not mix")
    func currencyMismatch() throws {
        #expect(throws: MoneyError.currencyMismatch(.usd, .eur)) {
            try Money.zero(.usd).adding(Money.zero(.eur))
        }
    }

    @Test("unknown currency codes do not exist")
    func currencies() {
        #expect(Currency(code: "USD")?.minorUnits == 2)
        #expect(Currency(code: "JPY")?.minorUnits == 0)
        #expect(Currency(code: "BHD")?.minorUnits == 3)
        #expect(Currency(code: "XYZ") == nil)
        #expect(Currency(code: "usd") == nil)
    }
}
