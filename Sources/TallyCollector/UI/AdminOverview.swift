public import TallyCore
public import TallyLedger
public import TallyPricing

/// The admin overview of one period (`GET /ui`): every tenant with its usage per metric and its
/// charges, the agents the ledger has batch records of, and the period's reconciliation totals.
///
/// Read in one ledger snapshot with a few statements whatever the number of tenants
/// (``LedgerStore/periodUsage(_:)``); each tenant is priced with the collector's pricing plans
/// from what that read holds (``AggregatePricing/invoice(_:store:)``), so the charges shown are
/// the tenant's invoice total for the period as its own page prices it. Sorting and paging
/// (``page(_:)``) come after pricing, since charges can only be ordered once priced.
public struct AdminOverview: Sendable {
    /// One tenant: usage per metric (in the pricing file's metric order) and charges.
    public struct Row: Sendable, Hashable {
        public var tenant: String
        public var usage: [Quantity]
        /// The period's invoice total; nil when it could not be priced (`problem` says why).
        public var charges: Money?
        public var problem: String?

        public init(tenant: String, usage: [Quantity], charges: Money?, problem: String? = nil) {
            self.tenant = tenant
            self.usage = usage
            self.charges = charges
            self.problem = problem
        }
    }

    public var period: BillingPeriod
    public var now: EventTime
    /// Whether the period is still open (its invoices are drafts).
    public var isOpen: Bool
    public var metrics: [MetricDefinition]
    /// Every tenant matching the search, in byte order of their names.
    public var rows: [Row]
    public var agents: [AgentActivity]
    /// The period's reconciliation: the sum of its rows, and how many rows do not balance.
    public var reconciliation: ReconciliationCounts
    public var unbalancedRows: Int

    public init(
        period: BillingPeriod, now: EventTime, isOpen: Bool, metrics: [MetricDefinition], rows: [Row], agents: [AgentActivity],
        reconciliation: ReconciliationCounts, unbalancedRows: Int = 0
    ) {
        self.period = period
        self.now = now
        self.isOpen = isOpen
        self.metrics = metrics
        self.rows = rows
        self.agents = agents
        self.reconciliation = reconciliation
        self.unbalancedRows = unbalancedRows
    }

    /// Charges of every row summed per currency, in currency-code order.
    public func chargeTotals() throws(BillingError) -> [Money] {
        var totals: [String: Money] = [:]
        for row in rows {
            guard let charges = row.charges else { continue }
            do {
                totals[charges.currency.code] = try totals[charges.currency.code]?.adding(charges) ?? charges
            } catch {
                throw .pricing(.overflow(context: "the overview's total charges", detail: "\(error)"))
            }
        }
        return totals.sorted { $0.key < $1.key }.map(\.value)
    }

    /// The rows of one page, in the request's order.
    public func page(_ request: OverviewRequest) -> OverviewPage {
        let ordered = rows.sorted(by: request.order.areInIncreasingOrder(metrics: metrics))
        let size = OverviewRequest.pageSize
        let pageCount = max(1, (ordered.count + size - 1) / size)
        let page = min(max(request.page, 1), pageCount)
        let start = (page - 1) * size
        let slice = Array(ordered[min(start, ordered.count)..<min(start + size, ordered.count)])
        return OverviewPage(rows: slice, page: page, pageCount: pageCount, total: ordered.count, firstIndex: start)
    }
}

/// One page of the overview's tenants: which page (clamped to the pages there are), how many
/// pages and tenants in all, and the position of the first row (0-based).
public struct OverviewPage: Sendable, Hashable {
    public var rows: [AdminOverview.Row]
    public var page: Int
    public var pageCount: Int
    public var total: Int
    public var firstIndex: Int
}

/// What `GET /ui` asks for: the period, a tenant search, the order and the page.
public struct OverviewRequest: Sendable, Hashable {
    /// Rows per page.
    public static let pageSize = 50

    public var period: BillingPeriod
    /// Part of a tenant name (ASCII letters in any case); empty for every tenant.
    public var search: String
    public var order: OverviewOrder
    /// 1-based; a page past the last shows the last.
    public var page: Int

    public init(period: BillingPeriod, search: String = "", order: OverviewOrder = OverviewOrder(), page: Int = 1) {
        self.period = period
        self.search = search
        self.order = order
        self.page = page
    }
}

/// How the overview's tenants are ordered: by name, by charges or by a metric's usage, up or
/// down. Ties are broken by tenant name (byte order, ascending), so every order is total and a
/// page always holds the same tenants; tenants whose charges could not be priced come last.
public struct OverviewOrder: Sendable, Hashable {
    public enum Key: Sendable, Hashable {
        case tenant
        case charges
        case metric(String)
    }

    public var key: Key
    public var descending: Bool

    public init(key: Key = .tenant, descending: Bool? = nil) {
        self.key = key
        self.descending = descending ?? (key != .tenant)
    }

    /// The `sort` parameter's text: `tenant`, `charges` or `metric:NAME`.
    public var parameter: String {
        switch key {
        case .tenant: "tenant"
        case .charges: "charges"
        case .metric(let name): "metric:\(name)"
        }
    }

    /// Parses the `sort` (`tenant`, `charges`, `metric:NAME`) and `order` (`asc`, `desc`; by
    /// default names go up and figures down) parameters.
    public init(sort: String?, order: String?, metrics: [MetricDefinition]) throws(BillingError) {
        var key = Key.tenant
        switch sort ?? "tenant" {
        case "tenant", "": key = .tenant
        case "charges": key = .charges
        case let text where text.hasPrefix("metric:"):
            let name = String(text.dropFirst("metric:".count))
            guard metrics.contains(where: { $0.name == name }) else {
                throw .badParameter("sort", "no metric '\(name)' in the pricing file")
            }
            key = .metric(name)
        case let text: throw .badParameter("sort", "sort must be tenant, charges or metric:NAME, not '\(text)'")
        }
        switch order {
        case nil, "": self.init(key: key)
        case "asc": self.init(key: key, descending: false)
        case "desc": self.init(key: key, descending: true)
        case let text?: throw .badParameter("order", "order must be asc or desc, not '\(text)'")
        }
    }

    func areInIncreasingOrder(metrics: [MetricDefinition]) -> (AdminOverview.Row, AdminOverview.Row) -> Bool {
        let descending = self.descending
        func byName(_ a: AdminOverview.Row, _ b: AdminOverview.Row) -> Bool { a.tenant.utf8.lexicographicallyPrecedes(b.tenant.utf8) }
        switch key {
        case .tenant:
            return { a, b in descending ? byName(b, a) : byName(a, b) }
        case .charges:
            return { a, b in
                switch (a.charges, b.charges) {
                case (let x?, let y?) where x != y: return descending ? y < x : x < y
                case (nil, _?): return false
                case (_?, nil): return true
                default: return byName(a, b)
                }
            }
        case .metric(let name):
            let index = metrics.firstIndex { $0.name == name }
            return { a, b in
                let x = index.map { a.usage[$0] } ?? .zero
                let y = index.map { b.usage[$0] } ?? .zero
                if x != y { return descending ? y < x : x < y }
                return byName(a, b)
            }
        }
    }
}

extension Invoicing {
    /// The overview of `period` for tenants whose name matches `search` (``PeriodUsageQuery``):
    /// every tenant the ledger has in the period and every tenant a plan assignment names for
    /// part of it, priced; the agents; the period's reconciliation. One read snapshot.
    public func overview(period: BillingPeriod, search: String = "") async throws(BillingError) -> AdminOverview {
        guard let pricing else { throw .noPricing }
        let now = clock()
        guard period.start <= now else { throw .unknownPeriod(period.description) }
        let query = pricing.periodUsageQuery(period: period, search: search)
        let isOpen = lateWindow.isOpen(period, now: now)
        return try await onLedger(readOnly: true) { store throws(BillingError) in
            let tenants: [TenantPeriodUsage]
            let agents: [AgentActivity]
            let reconciliation: [ReconciliationRow]
            do {
                tenants = try pricing.tenants(query, store: store)
                agents = try store.agentActivity()
                reconciliation = try store.reconciliation(ReconciliationFilter(period: period))
            } catch {
                throw .reading(error)
            }
            var rows: [AdminOverview.Row] = []
            rows.reserveCapacity(tenants.count)
            for tenant in tenants {
                var quantities: [Quantity] = []
                for metric in pricing.config.metrics { quantities.append(try pricing.quantity(of: metric, in: tenant, store: store)) }
                do throws(BillingError) {
                    let invoice = try pricing.invoice(tenant, store: store)
                    rows.append(AdminOverview.Row(tenant: tenant.tenant, usage: quantities, charges: invoice.total))
                } catch {
                    // One tenant that cannot be priced (no plan, say) must not hide the others.
                    rows.append(AdminOverview.Row(tenant: tenant.tenant, usage: quantities, charges: nil, problem: error.description))
                }
            }
            return AdminOverview(
                period: period, now: now, isOpen: isOpen, metrics: pricing.config.metrics, rows: rows, agents: agents,
                reconciliation: reconciliation.total, unbalancedRows: reconciliation.filter { !$0.counts.balances }.count)
        }
    }
}

extension AggregatePricing {
    /// Every tenant of a bulk period read (``periodUsageQuery(period:search:)``): those the
    /// ledger has in the period, and those a plan assignment names for part of it (they owe its
    /// fees without events, and are read as empty), in byte order of their names.
    public func tenants(_ query: PeriodUsageQuery, store: any LedgerStore) throws(LedgerError) -> [TenantPeriodUsage] {
        var tenants = try store.periodUsage(query)
        let seen = Set(tenants.map(\.tenant))
        for tenant in assignedTenants(during: query.period).filter(query.matches) where !seen.contains(tenant) {
            tenants.append(
                TenantPeriodUsage(tenant: tenant, period: query.period, read: Set(query.cells), readUniqueCounts: Set(query.uniqueCounts)))
        }
        tenants.sort { $0.tenant.utf8.lexicographicallyPrecedes($1.tenant.utf8) }
        return tenants
    }
}
