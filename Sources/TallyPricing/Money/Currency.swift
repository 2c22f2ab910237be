/// An ISO 4217 currency that Tally can bill in, with the number of minor-unit digits an invoice
/// line is rounded to (USD 2, JPY 0, KWD 3, …).
///
/// Only the codes in ``Currency/known`` exist: a pricing file naming any other code is refused at
/// load, so no amount is ever rounded with a guessed number of decimals.
public struct Currency: Sendable, Hashable, CustomStringConvertible {
    /// The three-letter ISO 4217 code, upper case.
    public let code: String
    /// Digits after the decimal point of the smallest coin or cent (ISO 4217 "minor unit").
    public let minorUnits: Int

    private init(_ code: String, _ minorUnits: Int) {
        self.code = code
        self.minorUnits = minorUnits
    }

    /// The currency with this ISO 4217 code, or nil when Tally does not know it.
    public init?(code: String) {
        guard let known = Self.known[code] else { return nil }
        self = known
    }

    public var description: String { code }

    public static let usd = Currency("USD", 2)
    public static let eur = Currency("EUR", 2)
    public static let jpy = Currency("JPY", 0)
    public static let kwd = Currency("KWD", 3)

    /// Every currency Tally bills in, by code (ISO 4217 minor units).
    public static let known: [String: Currency] = {
        let table: [(String, Int)] = [
            ("USD", 2), ("EUR", 2), ("GBP", 2), ("CHF", 2), ("CAD", 2), ("AUD", 2), ("NZD", 2),
            ("SEK", 2), ("NOK", 2), ("DKK", 2), ("PLN", 2), ("CZK", 2), ("HUF", 2), ("RON", 2),
            ("CNY", 2), ("HKD", 2), ("SGD", 2), ("INR", 2), ("BRL", 2), ("MXN", 2), ("ZAR", 2),
            ("ILS", 2), ("TRY", 2), ("AED", 2), ("SAR", 2), ("THB", 2), ("MYR", 2), ("PHP", 2),
            ("IDR", 2), ("TWD", 2),
            ("JPY", 0), ("KRW", 0), ("CLP", 0), ("ISK", 0), ("VND", 0), ("UGX", 0), ("XOF", 0),
            ("XAF", 0), ("PYG", 0),
            ("KWD", 3), ("BHD", 3), ("OMR", 3), ("JOD", 3), ("TND", 3), ("LYD", 3), ("IQD", 3),
        ]
        var result: [String: Currency] = [:]
        for (code, digits) in table { result[code] = Currency(code, digits) }
        return result
    }()
}
