import Foundation
import TallyCore
import TallyLedger
import TallyPricing
import Testing
@testable import TallyCollector

/// The pages' pure parts: numbers for people, the overview's order and pages, links, and the
/// Basic credentials a browser sends.
@Suite struct PageFormattingTests {
    func q(_ text: String) throws -> Quantity { try Quantity(parsing: text) }
    func money(_ text: String, _ code: String) throws -> Money { try Money(currency: try #require(Currency(code: code)), parsing: text) }

    @Test func thousandsSeparatorsAndRounding() throws {
        #expect(HumanFormat.grouped("0") == "0")
        #expect(HumanFormat.grouped("999") == "999")
        #expect(HumanFormat.grouped("1000") == "1,000")
        #expect(HumanFormat.grouped("1234567") == "1,234,567")
        #expect(HumanFormat.grouped("-100000") == "-100,000")
        #expect(HumanFormat.quantity(try q("1234567.891")) == "1,234,567.89")
        #expect(HumanFormat.quantity(try q("0.005")) == "0.01")  // half up
        #expect(HumanFormat.quantity(try q("0.004")) == "0")
        #expect(HumanFormat.quantity(try q("12.5")) == "12.5")
        #expect(HumanFormat.quantity(try q("999999.999")) == "1,000,000")
        #expect(HumanFormat.quantity(Quantity(nanos: -1_500_000_000_000)) == "-1,500")
        #expect(HumanFormat.quantity(try q("0.123456789"), fractionDigits: 9) == "0.123456789")
        #expect(HumanFormat.quantity(Quantity(1200), unit: "ms") == "1,200 ms")
        #expect(HumanFormat.count(1_000_000) == "1,000,000")
    }

    @Test func bytesInDecimalUnitsWithThreeSignificantDigits() throws {
        let cases: [(String, String)] = [
            ("0", "0 B"), ("999", "999 B"), ("999.6", "1.00 KB"), ("1000", "1.00 KB"), ("1536", "1.54 KB"), ("9995", "10.0 KB"),
            ("99949", "99.9 KB"), ("99950", "100 KB"), ("999499", "999 KB"), ("999500", "1.00 MB"), ("12345678", "12.3 MB"),
            ("1234567890", "1.23 GB"), ("456000000000", "456 GB"), ("1000000000000000", "1.00 PB"),
        ]
        for (bytes, shown) in cases { #expect(HumanFormat.bytes(try q(bytes)) == shown, "\(bytes)") }
        #expect(HumanFormat.quantity(try q("3500000"), unit: "bytes") == "3.50 MB")
    }

    @Test func moneyWithItsCurrency() throws {
        #expect(HumanFormat.money(try money("1234.5", "USD")) == "$1,234.50")
        #expect(HumanFormat.money(try money("70", "EUR")) == "€70.00")
        #expect(HumanFormat.money(try money("1235", "JPY")) == "¥1,235")
        #expect(HumanFormat.money(try money("1234567.125", "KWD")) == "KWD 1,234,567.125")
        #expect(HumanFormat.money(try money("12.5", "CHF")) == "CHF 12.50")
        #expect(HumanFormat.money(try money("-5", "USD")) == "-$5.00")
        #expect(HumanFormat.money(try money("0.0000125", "GBP")) == "£0.0000125")  // exact digits are never dropped
    }

    @Test func durations() {
        #expect(HumanFormat.duration(seconds: 0) == "0 s")
        #expect(HumanFormat.duration(seconds: -5) == "0 s")
        #expect(HumanFormat.duration(seconds: 45) == "45 s")
        #expect(HumanFormat.duration(seconds: 60) == "1 min")
        #expect(HumanFormat.duration(seconds: 725) == "12 min 5 s")
        #expect(HumanFormat.duration(seconds: 3_700) == "1 h 1 min")
        #expect(HumanFormat.duration(seconds: 2 * 86_400 + 4 * 3_600 + 59) == "2 d 4 h")
        #expect(HumanFormat.time(EventTime(seconds: 1_776_081_605)) == "2026-04-13 12:00:05 UTC")
    }

    // MARK: Order and pages

    static let metrics = [
        MetricDefinition(name: "api_calls", aggregation: .sum), MetricDefinition(name: "bytes_out", aggregation: .sum, unit: "bytes"),
    ]

    func overview(_ rows: [AdminOverview.Row]) -> AdminOverview {
        AdminOverview(
            period: BillingPeriod(year: 2026, month: 3) ?? BillingPeriod(containing: .now()), now: EventTime.now(), isOpen: true,
            metrics: Self.metrics, rows: rows, agents: [], reconciliation: ReconciliationCounts())
    }

    func row(_ tenant: String, calls: Int64 = 0, dollars: String? = "0") -> AdminOverview.Row {
        AdminOverview.Row(
            tenant: tenant, usage: [Quantity(calls), .zero], charges: dollars.flatMap { try? Money(currency: .usd, parsing: $0) },
            problem: dollars == nil ? "no plan" : nil)
    }

    @Test func pagesAreClampedAndCoverEveryRowOnce() {
        func pages(_ count: Int) -> AdminOverview { overview((0..<count).map { row(String(format: "t-%04d", $0)) }) }
        let empty = pages(0).page(OverviewRequest(period: pages(0).period))
        #expect(empty.rows.isEmpty && empty.page == 1 && empty.pageCount == 1 && empty.total == 0)
        let exact = pages(100)
        #expect(exact.page(OverviewRequest(period: exact.period, page: 2)).rows.map(\.tenant).first == "t-0050")
        #expect(exact.page(OverviewRequest(period: exact.period)).pageCount == 2)
        let more = pages(101)
        let last = more.page(OverviewRequest(period: more.period, page: 3))
        #expect(last.pageCount == 3 && last.rows.map(\.tenant) == ["t-0100"] && last.firstIndex == 100)
        // Past the last page: the last page; before the first: the first.
        #expect(more.page(OverviewRequest(period: more.period, page: 99)).page == 3)
        #expect(more.page(OverviewRequest(period: more.period, page: -4)).rows.first?.tenant == "t-0000")
        var seen: [String] = []
        for number in 1...3 {
            seen += more.page(OverviewRequest(period: more.period, order: OverviewOrder(key: .charges), page: number)).rows.map(\.tenant)
        }
        #expect(seen.count == 101 && Set(seen).count == 101)
    }

    @Test func ordersAreTotalWithNameTieBreaksAndUnpricedLast() throws {
        let rows = [
            row("b", calls: 5, dollars: "1"), row("a", calls: 5, dollars: "1"), row("C", calls: 9, dollars: nil), row("d", calls: 1, dollars: "3"),
        ]
        let data = overview(rows)
        func order(_ order: OverviewOrder) -> [String] { data.page(OverviewRequest(period: data.period, order: order)).rows.map(\.tenant) }
        #expect(order(OverviewOrder()) == ["C", "a", "b", "d"])  // byte order: upper case first
        #expect(order(OverviewOrder(key: .tenant, descending: true)) == ["d", "b", "a", "C"])
        #expect(order(OverviewOrder(key: .charges)) == ["d", "a", "b", "C"])  // descending by default; ties by name
        #expect(order(OverviewOrder(key: .charges, descending: false)) == ["a", "b", "d", "C"])
        #expect(order(OverviewOrder(key: .metric("api_calls"))) == ["C", "a", "b", "d"])
        #expect(order(OverviewOrder(key: .metric("api_calls"), descending: false)) == ["d", "a", "b", "C"])
        #expect(try data.chargeTotals() == [try money("5", "USD")])
    }

    @Test func sortParametersAreCheckedAgainstThePricingFile() throws {
        let metrics = Self.metrics
        #expect(try OverviewOrder(sort: nil, order: nil, metrics: metrics) == OverviewOrder())
        #expect(try OverviewOrder(sort: "charges", order: nil, metrics: metrics) == OverviewOrder(key: .charges, descending: true))
        #expect(
            try OverviewOrder(sort: "metric:bytes_out", order: "asc", metrics: metrics) == OverviewOrder(key: .metric("bytes_out"), descending: false)
        )
        #expect(OverviewOrder(key: .metric("bytes_out")).parameter == "metric:bytes_out")
        #expect(throws: BillingError.self) { try OverviewOrder(sort: "metric:nope", order: nil, metrics: metrics) }
        #expect(throws: BillingError.self) { try OverviewOrder(sort: "price", order: nil, metrics: metrics) }
        #expect(throws: BillingError.self) { try OverviewOrder(sort: "tenant", order: "up", metrics: metrics) }
    }

    @Test func linksEncodeEveryByteAFormWouldAndLeaveOutDefaults() {
        #expect(PageLayout.percentEncoded("a b/ü&=%+") == "a%20b%2F%C3%BC%26%3D%25%2B")
        #expect(PageLayout.percentEncoded("Az09-._~") == "Az09-._~")
        let march = BillingPeriod(year: 2026, month: 3)
        #expect(PageLayout.overview(period: nil) == "/ui")
        #expect(
            PageLayout.overview(period: march, search: "a&b", order: OverviewOrder(key: .charges), page: 3)
                == "/ui?period=2026-03&q=a%26b&sort=charges&order=desc&page=3")
        if let march {
            #expect(
                PageLayout.tenant("<x>/y", period: march, day: EventTime(seconds: 1_772_582_400))
                    == "/ui/tenants/%3Cx%3E%2Fy?period=2026-03&day=2026-03-04")
        }
        // What a link carries reads back as it was.
        let query = FormQuery("q=" + PageLayout.percentEncoded("50% off+more & ü"))
        #expect(query.get("q") == "50% off+more & ü")
    }

    @Test func basicCredentialsCarryTheKeyAsThePassword() throws {
        let access = APIAccess(adminKey: "admin-key-0123456789", tenantKeys: ["acme-key-0123456789ab": "acme"])
        func basic(_ credentials: String) -> String { "Basic " + Data(credentials.utf8).base64EncodedString() }
        #expect(try access.grant(authorization: basic("anyone:admin-key-0123456789"), remote: nil) == .everything)
        #expect(try access.grant(authorization: basic(":acme-key-0123456789ab"), remote: nil) == .tenant("acme"))
        // The password is everything after the first colon.
        for bad in [
            basic("a:b:acme-key-0123456789ab"), basic("admin-key-0123456789"), basic("user:"), "Basic !!!", "Basic",
            basic("user:admin-key-0123456789 "),
        ] {
            #expect(throws: APIError.self, "\(bad)") { try access.grant(authorization: bad, remote: nil) }
        }
        #expect(APIAccess.challenge.hasPrefix("Basic realm="))
    }

    @Test func chartsScaleBarsExactlyAndEscapeLabels() {
        let chart = UsageChart(
            title: "<calls> per day", slots: 3, slotLabel: { String($0 + 1) },
            bars: [
                .init(slot: 0, quantity: Quantity(50), label: "d1", link: "/ui/tenants/a?day=1&x=<"),
                .init(slot: 2, quantity: Quantity(100), label: "d3", link: nil),
                .init(slot: 1, quantity: Quantity(nanos: 1), label: "tiny", link: nil),
            ], unit: nil
        ).svg()
        #expect(chart.contains("height=\"60\"") && chart.contains("height=\"120\""))
        #expect(chart.contains("height=\"1\""))  // a tiny figure stays visible
        #expect(chart.contains("&lt;calls&gt; per day") && !chart.contains("<calls>"))
        #expect(chart.contains("href=\"/ui/tenants/a?day=1&amp;x=&lt;\""))
        #expect(chart.contains("<title>d3: 100</title>"))
        #expect(chart.contains(">100</text>") && chart.contains(">50</text>") && chart.contains(">0</text>"))
    }
}
