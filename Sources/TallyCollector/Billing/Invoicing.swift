public import TallyCore
public import TallyLedger
import TallyPricing

/// Usage, charges and invoices of the collector, read from the ``Ledger``.
///
/// An invoice is a **draft** while its period is open and **final** once the period has closed
/// (its end plus the grace window). Final invoices are frozen by ``freezeClosedPeriods(lookback:)``
/// (the collector's ``InvoiceFreezer`` runs it at start and every minute): priced from the
/// aggregates, encoded once (``EncodedInvoice``: Tally's canonical JSON), and that JSON and its
/// SHA-256 stored in the `final_invoices` table; every later read serves the stored bytes as
/// they are, so a final invoice never changes and its hash is of exactly what is served. A read never writes: before
/// the freezer has reached a closed period, its final invoice is priced for the reader (with
/// the SHA-256 the frozen copy will have) and not stored. Late events for a closed period are
/// billed in the earliest open period, where they appear as adjustment lines.
///
/// Only a tenant the collector bills has invoices: one the ledger received events for, or one a
/// plan assignment names. Any other tenant gets ``BillingError/unknownTenant(_:)`` (404).
public struct Invoicing: Sendable {
    public let ledger: Ledger
    /// nil when no pricing file is configured: usage works, charges and invoices do not.
    public let pricing: AggregatePricing?
    public let lateWindow: LateWindow
    public let clock: @Sendable () -> EventTime

    public init(
        ledger: Ledger, pricing: AggregatePricing?, lateWindow: LateWindow,
        clock: @escaping @Sendable () -> EventTime = { EventTime.now() }
    ) {
        self.ledger = ledger
        self.pricing = pricing
        self.lateWindow = lateWindow
        self.clock = clock
    }

    /// Usage buckets from the aggregates.
    public func usage(_ query: UsageQuery) async throws(BillingError) -> [UsageBucket] {
        try await onLedger(readOnly: true, Self.usageRead(query))
    }

    /// ``usage(_:)`` answered on the calling thread, or nil when it cannot be without waiting
    /// (see ``Ledger/readNow(_:)``).
    public func usageNow(_ query: UsageQuery) -> Result<[UsageBucket], BillingError>? {
        onLedgerNow(Self.usageRead(query))
    }

    private static func usageRead(_ query: UsageQuery) -> @Sendable (any LedgerStore) throws(BillingError) -> [UsageBucket] {
        { store throws(BillingError) in
            do throws(LedgerError) { return try store.usage(query) } catch {
                if case .invalidConfiguration(let problem) = error { throw .badParameter("group_by", problem) }
                throw .ledger(error)
            }
        }
    }

    /// The draft invoice of the period that contains now: charges to date.
    public func charges(tenant: String) async throws(BillingError) -> InvoiceView {
        try await invoice(tenant: tenant, period: BillingPeriod(containing: clock()))
    }

    /// The invoice of `tenant` for `period`: final (frozen) if the period has closed, else a draft.
    public func invoice(tenant: String, period: BillingPeriod) async throws(BillingError) -> InvoiceView {
        try await onLedger(readOnly: true, try invoiceRead(tenant: tenant, period: period))
    }

    /// ``invoice(tenant:period:)`` answered on the calling thread, or nil when it cannot be
    /// without waiting (see ``Ledger/readNow(_:)``).
    public func invoiceNow(tenant: String, period: BillingPeriod) -> Result<InvoiceView, BillingError>? {
        let read: @Sendable (any LedgerStore) throws(BillingError) -> InvoiceView
        do { read = try invoiceRead(tenant: tenant, period: period) } catch { return .failure(error) }
        return onLedgerNow(read)
    }

    /// The read that answers ``invoice(tenant:period:)``.
    private func invoiceRead(
        tenant: String, period: BillingPeriod
    ) throws(BillingError) -> @Sendable (any LedgerStore) throws(BillingError) -> InvoiceView {
        guard let pricing else { throw .noPricing }
        let now = clock()
        guard period.start <= now else { throw .unknownPeriod(period.description) }
        let window = lateWindow
        let closesAt = period.end.advanced(by: window.grace)
        let assigned = pricing.assigns(tenant: tenant)
        if window.isOpen(period, now: now) {
            // A draft only reads.
            return { store throws(BillingError) in
                let invoices = store
                try Self.requireBilled(tenant, period: period, assigned: assigned, invoices)
                let invoice = try pricing.invoice(store: invoices, tenant: tenant, period: period)
                return InvoiceView(
                    status: .draft, sha256: nil, finalizedAt: nil, closesAt: closesAt.description,
                    invoice: try EncodedInvoice(InvoiceDocument.priced(invoice, store: store)))
            }
        }
        return { store throws(BillingError) in
            let invoices = store
            do {
                if let frozen = try invoices.finalInvoice(tenant: tenant, period: period) {
                    return InvoiceView(
                        status: .final, sha256: frozen.sha256, finalizedAt: frozen.finalizedAt.description, closesAt: closesAt.description,
                        invoice: try EncodedInvoice(stored: frozen.json))
                }
                try Self.requireBilled(tenant, period: period, assigned: assigned, invoices)
                let encoded = try EncodedInvoice(
                    InvoiceDocument.priced(try pricing.invoice(store: invoices, tenant: tenant, period: period), store: invoices))
                return InvoiceView(
                    status: .final, sha256: encoded.sha256, finalizedAt: nil, closesAt: closesAt.description, invoice: encoded)
            } catch let error as LedgerError {
                throw .ledger(error)
            } catch let error as BillingError {
                throw error
            } catch {
                throw .reading(error)
            }
        }
    }

    /// Freezes the final invoice of every billed tenant (events in the period, or a plan
    /// assignment during it) of every period that closed within the last `lookback` periods and
    /// has none yet. Returns how many were frozen. Idempotent: a frozen invoice is never
    /// replaced, so two collectors (or two runs) may race harmlessly.
    ///
    /// The invoices are priced on a reader (``Ledger/read(_:)``), like any other read, one tenant
    /// per read: a closed period's usage no longer changes, and a reader never folds or holds a
    /// writer, so a collector starting during heavy ingest does not stall its commits while it
    /// prices a year of closed periods, and dashboards' reads take turns with it. Only the
    /// freezing itself goes to a writer, a hundred invoices at a time.
    @discardableResult
    public func freezeClosedPeriods(lookback: Int = 12) async throws(BillingError) -> Int {
        guard let pricing else { return 0 }
        let now = clock()
        var period = BillingPeriod(containing: now)
        var frozen = 0
        for _ in 0...lookback {
            if !lateWindow.isOpen(period, now: now) {
                let closed = period
                let assigned = pricing.assignedTenants(during: closed)
                let listed = try await onLedger(readOnly: true) { store throws(BillingError) -> [String] in
                    do { return try store.tenants(in: closed) } catch { throw .reading(error) }
                }
                var priced: [FinalInvoiceRecord] = []
                for tenant in Set(listed).union(assigned).sorted() {
                    // One read per tenant: a dashboard's read waits for one invoice, never for
                    // the whole period's.
                    let record = try await onLedger(readOnly: true) { store throws(BillingError) -> FinalInvoiceRecord? in
                        do {
                            guard try store.finalInvoice(tenant: tenant, period: closed) == nil else { return nil }
                            let encoded = try EncodedInvoice(
                                InvoiceDocument.priced(try pricing.invoice(store: store, tenant: tenant, period: closed), store: store))
                            return FinalInvoiceRecord(
                                tenant: tenant, period: closed, json: encoded.json.text, sha256: encoded.sha256, finalizedAt: now)
                        } catch let error as BillingError {
                            throw error
                        } catch {
                            throw .reading(error)
                        }
                    }
                    if let record { priced.append(record) }
                    if priced.count >= Self.freezeChunk {
                        frozen += try await freeze(priced)
                        priced.removeAll()
                    }
                }
                frozen += try await freeze(priced)
            }
            period = period.previous
        }
        return frozen
    }

    /// Final invoices priced and held before a writer freezes them, at most.
    static let freezeChunk = 100

    /// Freezes `records` on a writer (none: nothing to do); returns how many.
    private func freeze(_ records: [FinalInvoiceRecord]) async throws(BillingError) -> Int {
        guard !records.isEmpty else { return 0 }
        return try await onLedger { store throws(BillingError) -> Int in
            do {
                for record in records { _ = try store.freezeInvoice(record) }
                return records.count
            } catch {
                throw .reading(error)
            }
        }
    }

    /// Throws ``BillingError/unknownTenant(_:)`` unless `tenant` is one the collector bills: a
    /// plan assignment names it (`assigned`) or the ledger received events for it.
    private static func requireBilled(
        _ tenant: String, period: BillingPeriod, assigned: Bool, _ invoices: any LedgerStore
    ) throws(BillingError) {
        if assigned { return }
        let seen: Bool
        do { seen = try invoices.hasSeen(tenant: tenant, lookingFirstIn: period) } catch { throw .ledger(error) }
        if !seen { throw .unknownTenant(tenant) }
    }

    /// Reconciliation rows from the ledger's counters, and the stored rows whose period cannot
    /// be read back (reported beside them, never a failure), read in one snapshot.
    public func reconciliation(
        _ filter: ReconciliationFilter
    ) async throws(BillingError)
        -> (rows: [ReconciliationRow], unreadable: [UnreadableReconciliationRow])
    {
        try await onLedger(readOnly: true) { store throws(BillingError) in
            do { return (try store.reconciliation(filter), try store.unreadableReconciliation(filter)) } catch {
                throw .reading(error)
            }
        }
    }

    /// Tenants the ledger saw in `period`.
    public func tenants(in period: BillingPeriod) async throws(BillingError) -> [String] {
        try await onLedger(readOnly: true) { store throws(BillingError) in
            let invoices = store
            do { return try invoices.tenants(in: period) } catch { throw .reading(error) }
        }
    }

    /// Runs the read-only `body` on the calling thread if a reader can answer there at once
    /// (``Ledger/readNow(_:)``); nil when it cannot, and the caller should use ``onLedger(readOnly:_:)``.
    public func onLedgerNow<T: Sendable>(
        _ body: @escaping @Sendable (any LedgerStore) throws(BillingError) -> T
    ) -> Result<T, BillingError>? {
        let answer = ledger.readNow { store throws(LedgerError) -> Result<T, BillingError> in
            do throws(BillingError) { return .success(try body(store)) } catch { return .failure(error) }
        }
        switch answer {
        case nil: return nil
        case .success(let result)?: return result
        case .failure(let error)?: return .failure(.reading(error))
        }
    }

    /// Runs `body` on the ledger thread (or, `readOnly`, wherever ``Ledger/read(_:)``
    /// answers fastest), carrying a ``BillingError`` across.
    public func onLedger<T: Sendable>(
        readOnly: Bool = false, _ body: @escaping @Sendable (any LedgerStore) throws(BillingError) -> T
    ) async throws(BillingError) -> T {
        let result: Result<T, BillingError>
        do {
            let wrapped: @Sendable (any LedgerStore) throws(LedgerError) -> Result<T, BillingError> = { store in
                do throws(BillingError) { return .success(try body(store)) } catch { return .failure(error) }
            }
            result = readOnly ? try await ledger.read(wrapped) : try await ledger.perform(wrapped)
        } catch {
            throw .reading(error)
        }
        return try result.get()
    }

    /// Lowercase hex SHA-256 of the UTF-8 bytes of `text`.
    public static func sha256(_ text: String) -> String {
        SHA256Digest.hex(text)
    }
}
