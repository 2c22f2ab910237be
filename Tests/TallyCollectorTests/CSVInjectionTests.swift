import Foundation
import Hummingbird
import HummingbirdTesting
import Testing
import TallyCore
@testable import TallyCollector

/// CSV cells that a spreadsheet could run as a formula are escaped with a leading `'`, including
/// those that start with a space, a no-break space or a fullwidth `＝ ＋ － ＠`.
@Suite struct CSVInjectionTests {
    @Test(arguments: [
        "=cmd", "+cmd", "-cmd", "@cmd", "\t=cmd", "\r=cmd", " =cmd", " cmd", "\u{00A0}=cmd", "\u{FF1D}cmd", "\u{FF0B}cmd",
        "\u{FF0D}cmd", "\u{FF20}cmd", "-1+cmd", "-", "-1.2.3",
    ])
    func formulaStartersAreEscaped(_ cell: String) {
        let written = InvoiceRendering.csv(cell)
        let unquoted = written.hasPrefix("\"") ? String(written.dropFirst()) : written
        #expect(unquoted.hasPrefix("'" + cell.prefix(1)), "\(cell.debugDescription) -> \(written.debugDescription)")
    }

    @Test(arguments: ["acme", "api_calls", "70.00", "-5", "0", "120000", "2026-03", "\u{FF11}\u{FF12}", "a=b"])
    func plainCellsAreLeftAlone(_ cell: String) {
        #expect(InvoiceRendering.csv(cell) == cell)
    }

    /// A tenant named to inject a formula shows up escaped in the usage report.
    @Test func tenantNamesAreEscapedInTheReport() async throws {
        let fixture = try BillingFixture()
        let tenants = ["\u{FF1D}HYPERLINK(\"http://x\")", "\u{00A0}=1+1", " @SUM(A1)"]
        try await fixture.commit(
            try tenants.enumerated().map { index, tenant in try BillingFixture.event(tenant, at: "2026-03-02T10:00:00Z", id: "\(index)") })
        try await fixture.application().test(.router) { client in
            try await client.execute(uri: "/v1/reports/2026-03.csv", method: .get, headers: bearer(BillingFixture.adminKey)) { response in
                #expect(response.status == .ok)
                let cells = response.text.split(separator: "\r\n").flatMap { $0.split(separator: ",").map(String.init) }
                for tenant in tenants {
                    let written = InvoiceRendering.csv(tenant)
                    #expect(written.hasPrefix("'") || written.hasPrefix("\"'"))
                    #expect(response.text.contains(written), "\(tenant.debugDescription)")
                }
                // No cell starts with a raw formula starter.
                for cell in cells {
                    let unquoted = cell.hasPrefix("\"") ? String(cell.dropFirst()) : cell
                    #expect(
                        unquoted.unicodeScalars.first.map { !InvoiceRendering.formulaStarters.contains($0) } ?? true, "\(cell.debugDescription)")
                }
            }
        }
        await fixture.shutdown()
    }
}
