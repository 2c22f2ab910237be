import Foundation
import TallyClient
import TallyCore
import Testing

/// The admin overview and a tenant's page in a real browser: a real collector with an admin key
/// gets 3,001 tenants' events from two agents over the wire protocol, and headless Chromium
/// loads the pages (the admin key as Basic credentials in the URL, as a person would type it
/// when the browser asks). The test reads what a person would see in the rendered DOM, and
/// keeps one screenshot per page outside the repository (`TALLY_SCREENSHOT_DIR`, by default
/// `/tmp/tally-ui-screenshots`).
@Suite(.serialized) struct AdminPagesBrowserTests {
    static let adminKey = "admin-key-for-the-browser-0123"

    static let pricing = """
        metrics:
          - name: api_calls
            aggregation: sum
          - name: bytes_out
            aggregation: sum
            unit: bytes
        plans:
          - id: standard
            currency: USD
            charges:
              - flat_fee: "29.00"
                name: Platform fee
              - metric: api_calls
                model: per_unit
                free: 1000
                unit_price: "0.001"
              - metric: bytes_out
                model: per_unit
                unit_price: "0.00000001"
        default_plan: standard
        """

    @Test func theOverviewAndATenantPageRenderInChromium() async throws {
        guard let chromium = try HeadlessChromium.locate() else { return }
        let directory = try ServiceProcess.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let pricingPath = directory.appendingPathComponent("pricing.yaml").path
        try Self.pricing.write(toFile: pricingPath, atomically: true, encoding: .utf8)
        let httpPort = try freePort()
        let collector = try await ServiceProcess(
            directory: directory,
            arguments: [
                "--store", "sqlite:\(directory.path)/ledger.db", "--pricing", pricingPath, "--admin-key", Self.adminKey,
                "--http", "127.0.0.1:\(httpPort)",
            ])
        defer { collector.kill() }

        // Events a few seconds old, inside the current month (so no page has to guess which).
        let now = EventTime.now()
        let period = BillingPeriod(containing: now)
        let time = max(now.advanced(by: .seconds(-5)), period.start)
        func event(_ tenant: String, metric: String = "api_calls", _ quantity: Int64, id: String) -> UsageEvent {
            UsageEvent(tenant: tenant, metric: metric, quantity: Quantity(quantity), timestamp: time, id: id, properties: Properties([]))
        }
        let tenants = (0..<3000).map { String(format: "tenant-%04d", $0) }
        let agents = [("edge-eu-1", Array(tenants[0..<1500])), ("edge-us-2", Array(tenants[1500...]))]
        for (index, (agentID, names)) in agents.enumerated() {
            let agent = try ScriptedAgent(port: collector.port)
            guard case .welcome? = try agent.handshake(agentId: agentID, secret: nil) else {
                Issue.record("\(agentID) was not welcomed: \(collector.logText)")
                return
            }
            var events = names.enumerated().map { event($0.element, Int64($0.offset + 1), id: "\(agentID)-\($0.offset)") }
            if index == 1 {
                events.append(event("acme-corp", 123_456, id: "acme-calls"))
                events.append(event("acme-corp", metric: "bytes_out", 2_500_000_000, id: "acme-bytes"))
            } else {
                events.append(events[0])  // a client retry: a duplicate
            }
            for (offset, start) in stride(from: 0, to: events.count, by: 1000).enumerated() {
                let reply = try agent.sendBatch(sequence: UInt64(offset + 1), events: Array(events[start..<min(start + 1000, events.count)]))
                guard case .ack? = reply else {
                    Issue.record("\(agentID) batch \(offset + 1): \(String(describing: reply))")
                    return
                }
            }
        }

        let signedIn = "http://admin:\(Self.adminKey)@127.0.0.1:\(httpPort)"
        let month = "period=\(period)"
        // Without the key: a 401 whose challenge makes a browser ask for it.
        let http = HTTPExchange(host: "127.0.0.1", port: httpPort)
        let refused = try await http.request(method: "GET", path: "/ui")
        #expect(refused.status == 401 && refused.header("WWW-Authenticate")?.hasPrefix("Basic realm=") == true)
        #expect(refused.header("Content-Type")?.hasPrefix("text/html") == true && !refused.text.contains("tenant-"))

        // The overview, first page: every tenant counted, formatted charges, agents, reconciliation.
        let overview = try await chromium.dumpDOM("\(signedIn)/ui?\(month)")
        #expect(overview.contains("Tenants 1–50 of 3,001, page 1 of 61."), "\(overview.prefix(3000))")
        // acme-corp: $29 fee + (123,456 − 1,000 free) × $0.001 = $122.46 + 2.5 GB × $0.00000001 = $25.
        #expect(
            overview.contains(
                ">acme-corp</a></td><td class=\"n\">123,456</td><td class=\"n\" title=\"2,500,000,000 bytes\">2.50 GB</td><td class=\"n\">$176.46</td>"
            ))
        #expect(overview.contains(">tenant-0048</a>") && !overview.contains(">tenant-0049</a>"))
        #expect(overview.contains("<td>edge-eu-1</td>") && overview.contains("<td>edge-us-2</td>"))
        #expect(overview.contains("<td class=\"n\">1,501</td><td class=\"n\">1,500</td><td class=\"n\">1</td>"))  // eu: acked, accepted, duplicate
        #expect(overview.contains("<td class=\"n\">3,003</td><td class=\"n\">3,002</td><td class=\"n\">1</td>"))  // the period's reconciliation
        #expect(overview.contains("<td class=\"ok\">yes</td>"))
        #expect(overview.contains("rel=\"next\""))

        // The second page, in byte order of the names.
        let second = try await chromium.dumpDOM("\(signedIn)/ui?\(month)&page=2")
        #expect(second.contains("Tenants 51–100 of 3,001, page 2 of 61."))
        #expect(second.contains(">tenant-0049</a>") && second.contains(">tenant-0098</a>") && !second.contains(">acme-corp</a>"))

        // A search, and the largest charges first.
        let search = try await chromium.dumpDOM("\(signedIn)/ui?\(month)&q=ACME")
        #expect(search.contains("Tenants 1–1 of 1 whose name contains “ACME”"))
        #expect(search.contains(">acme-corp</a>") && !search.contains(">tenant-0001</a>"))
        let byCharges = try await chromium.dumpDOM("\(signedIn)/ui?\(month)&sort=charges")
        let firstRow = try #require(byCharges.range(of: "<tbody>"))
        #expect(byCharges[firstRow.upperBound...].prefix(200).contains(">acme-corp</a>"))
        #expect(byCharges.contains("Charges ▼"))

        // The tenant page: charts drawn as SVG, figures for people, a way back.
        let tenant = try await chromium.dumpDOM("\(signedIn)/ui/tenants/acme-corp?\(month)")
        #expect(tenant.contains("<svg class=\"chart\""))
        #expect(tenant.contains("aria-label=\"api_calls per day of \(period)\"") && tenant.contains("Hourly usage — "))
        #expect(tenant.contains("<b>$176.46</b>") && tenant.contains("<b>2.50 GB</b>") && tenant.contains("<b>123,456</b>"))
        #expect(tenant.contains("href=\"/ui?\(month)\">← All tenants</a>"))

        // One screenshot per page, kept outside the repository.
        let shots = URL(
            fileURLWithPath: ProcessInfo.processInfo.environment["TALLY_SCREENSHOT_DIR"]
                ?? FileManager.default.temporaryDirectory.appendingPathComponent("tally-ui-screenshots").path)
        try FileManager.default.createDirectory(at: shots, withIntermediateDirectories: true)
        for (name, path) in [("overview", "/ui?\(month)"), ("tenant-page", "/ui/tenants/acme-corp?\(month)")] {
            let file = shots.appendingPathComponent("\(name).png")
            try await chromium.screenshot("\(signedIn)\(path)", to: file)
            let bytes = try Data(contentsOf: file)
            #expect(bytes.starts(with: [0x89, 0x50, 0x4E, 0x47]) && bytes.count > 20_000, "\(file.path): \(bytes.count) bytes")
            print("screenshot of \(path): \(file.path)")
        }
        #expect(collector.process.isRunning, "\(collector.logText)")
    }
}
