import Foundation
public import TallyCore
public import TallyLedger
public import TallyPricing

/// An invoice as Tally publishes it (JSON, CSV, HTML): every figure is exact decimal text, never
/// a binary float. Its JSON (``canonicalJSON()``, written by `JSONWriter`: keys sorted, no
/// whitespace, no timestamps of its own making) is deterministic, so the SHA-256 of a final
/// invoice identifies its content.
public struct InvoiceDocument: Codable, Sendable, Hashable {
    /// One priced step of a usage line: a tier's share, or all units at one price.
    public struct Step: Codable, Sendable, Hashable {
        public var tier: Int?
        public var quantity: String
        public var unitPrice: String
        public var amount: String
    }

    /// One line: usage of a metric, a flat fee, a minimum true-up, or an adjustment for a
    /// closed period (`adjusts` names it).
    public struct Line: Codable, Sendable, Hashable {
        public var kind: String
        public var description: String
        public var plan: String
        public var segmentStart: String
        public var segmentEnd: String
        public var metric: String?
        public var propertyValue: String?
        public var quantity: String
        public var freeQuantity: String
        public var steps: [Step]
        public var exactAmount: String
        public var amount: String
        public var adjusts: String?
    }

    /// A correction behind the invoice's figures: an admin's void or amendment of one event of
    /// this period (its usage lines include it) or of a closed period (an adjustment line here
    /// bills the difference), with its reason and a link to the event's trace.
    public struct Correction: Codable, Sendable, Hashable {
        public var key: String
        public var metric: String
        public var fingerprint: String
        public var eventTime: String
        /// void or amend.
        public var action: String
        /// The quantity the correction adds to the metric's usage (negative for a void).
        public var quantityDelta: String
        /// The closed period it corrects, when the difference is an adjustment line here.
        public var adjusts: String?
        public var reason: String
        public var actor: String
        public var createdAt: String
        /// `GET` this (with a key that may read the tenant) for the event's trace.
        public var trace: String
    }

    /// A time range on one plan.
    public struct Segment: Codable, Sendable, Hashable {
        public var plan: String
        public var start: String
        public var end: String
    }

    public var tenant: String
    public var period: String
    public var periodStart: String
    public var periodEnd: String
    public var currency: String
    public var segments: [Segment]
    public var lines: [Line]
    /// The sum of the lines of the period itself (usage, fees, true-ups).
    public var subtotal: String
    /// The sum of the adjustment lines (late usage of closed periods).
    public var adjustments: String
    /// subtotal + adjustments: the exact sum of the rounded line amounts.
    public var total: String
    /// The corrections behind this invoice's figures, in the order made; absent when there are
    /// none (so an invoice without corrections has exactly the JSON it always had).
    public var corrections: [Correction]?

    /// The document of an engine-priced invoice.
    public init(_ invoice: Invoice) throws(BillingError) {
        tenant = invoice.tenant
        period = invoice.period.description
        periodStart = invoice.period.start.description
        periodEnd = invoice.period.end.description
        currency = invoice.currency.code
        segments = invoice.segments.map { Segment(plan: $0.planID, start: $0.start.description, end: $0.end.description) }
        var own = Money.zero(invoice.currency)
        var late = Money.zero(invoice.currency)
        lines = []
        for line in invoice.lines {
            do throws(MoneyError) {
                if line.adjusts == nil { own = try own.adding(line.amount) } else { late = try late.adding(line.amount) }
            } catch {
                throw .pricing(.overflow(context: "the invoice subtotal", detail: "\(error)"))
            }
            lines.append(
                Line(
                    kind: line.adjusts == nil ? line.kind.rawValue : "adjustment", description: line.description, plan: line.planID,
                    segmentStart: line.segment.start.description, segmentEnd: line.segment.end.description, metric: line.metric,
                    propertyValue: line.propertyValue, quantity: line.quantity.description,
                    freeQuantity: line.freeQuantity.description,
                    steps: line.steps.map {
                        Step(tier: $0.tier, quantity: $0.quantity.description, unitPrice: $0.unitPrice.description, amount: $0.amount.amountText)
                    },
                    exactAmount: line.exactAmount.amountText, amount: line.amount.amountText, adjusts: line.adjusts?.description))
        }
        subtotal = own.amountText
        adjustments = late.amountText
        total = invoice.total.amountText
    }

    /// The document of an invoice with the corrections behind it, read from `store`: those of
    /// the period's own events applied while it was open, and those billed in it as adjustments.
    public static func priced(_ invoice: Invoice, store: any LedgerStore) throws(BillingError) -> InvoiceDocument {
        var document = try InvoiceDocument(invoice)
        let period = invoice.period
        let records: [CorrectionRecord]
        do {
            records = try store.corrections(CorrectionFilter(tenant: invoice.tenant)).filter {
                $0.billedIn == period || ($0.billedIn == nil && $0.period == period)
            }
        } catch {
            throw .ledger(error)
        }
        guard !records.isEmpty else { return document }
        var notes: [Correction] = []
        for record in records {
            let delta: Quantity
            do { delta = try record.quantityDelta() } catch { throw .ledger(error) }
            let tenant = MeterEventExporter.formEncode(record.tenant)
            notes.append(
                Correction(
                    key: record.key, metric: record.metric, fingerprint: record.fingerprint.description, eventTime: record.timestamp.description,
                    action: record.action, quantityDelta: delta.description, adjusts: record.billedIn == nil ? nil : record.period.description,
                    reason: record.reason, actor: record.actor, createdAt: record.createdAt.description,
                    trace: "/v1/events/trace?tenant=\(tenant)&fingerprint=\(record.fingerprint)&period=\(record.period)"))
        }
        document.corrections = notes
        return document
    }

    /// Tally's canonical JSON of the document (`JSONWriter`): the bytes a final invoice's hash is
    /// taken over, and the bytes served for it.
    public func canonicalJSON() throws(BillingError) -> String { canonicalText().text }

    /// Reads a document back from its JSON (a stored final invoice), for the CSV and HTML pages;
    /// its JSON is served as stored (``EncodedInvoice``), never written again.
    public static func decode(json: String) throws(BillingError) -> InvoiceDocument {
        do {
            return try JSONDecoder().decode(InvoiceDocument.self, from: Data(json.utf8))
        } catch {
            throw .encoding("stored invoice JSON is unreadable: \(error)")
        }
    }
}

/// An invoice document with its JSON, encoded once: written canonically when it is priced, or
/// read back from a frozen final invoice, whose stored text is kept and served as stored.
///
/// Final invoices frozen before `JSONWriter` wrote them were spelled by Foundation's
/// `JSONEncoder` (sorted keys, no whitespace; strings may be escaped differently). Their stored
/// SHA-256 is of that stored text, which is what is served, so hash and bytes still agree; only
/// re-pricing one (`tallyctl audit`) can give a different spelling, and the audit compares the
/// documents before it calls that drift.
public struct EncodedInvoice: Sendable, Hashable {
    public let document: InvoiceDocument
    /// The JSON served for the document; a final invoice's SHA-256 is taken over exactly it.
    public let json: JSONText

    /// Encodes `document` canonically, once.
    public init(_ document: InvoiceDocument) throws(BillingError) {
        self.document = document
        json = document.canonicalText()
    }

    /// A frozen final invoice: its stored JSON kept as it is, and read for the pages.
    public init(stored text: String) throws(BillingError) {
        document = try InvoiceDocument.decode(json: text)
        do { json = try JSONText(text) } catch { throw .encoding("stored invoice JSON is unreadable: \(error)") }
    }

    /// Lowercase hex SHA-256 of ``json``.
    public var sha256: String { Invoicing.sha256(json.text) }
}

/// An invoice as served: draft while its period is open, final (frozen, with the SHA-256 of its
/// JSON) once the period has closed. Its JSON embeds the invoice's JSON byte for byte
/// (`{"closesAt":…,"finalizedAt":…,"invoice":INVOICE,"sha256":…,"status":…}`), and
/// `format=document` serves the invoice's JSON alone: for a final invoice, exactly the bytes
/// `sha256` is taken over.
public struct InvoiceView: Encodable, Sendable, Hashable {
    public enum Status: String, Codable, Sendable, Hashable {
        case draft, final
    }

    public var status: Status
    /// SHA-256 (hex) of ``invoiceJSON``; only for a final invoice.
    public var sha256: String?
    public var finalizedAt: String?
    /// When the period closes (its end plus the grace window): the invoice becomes final then.
    public var closesAt: String
    public let invoice: InvoiceDocument
    /// The invoice's JSON, as served.
    public let invoiceJSON: JSONText

    public init(status: Status, sha256: String?, finalizedAt: String?, closesAt: String, invoice: EncodedInvoice) {
        self.status = status
        self.sha256 = sha256
        self.finalizedAt = finalizedAt
        self.closesAt = closesAt
        self.invoice = invoice.document
        self.invoiceJSON = invoice.json
    }

    private enum CodingKeys: String, CodingKey {
        case status, sha256, finalizedAt, closesAt, invoice
    }

    /// The invoice member is ``invoiceJSON`` as it is (`JSONWriter` embeds it unchanged).
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(status, forKey: .status)
        try container.encodeIfPresent(sha256, forKey: .sha256)
        try container.encodeIfPresent(finalizedAt, forKey: .finalizedAt)
        try container.encode(closesAt, forKey: .closesAt)
        try container.encode(invoiceJSON, forKey: .invoice)
    }
}

/// Why a billing request failed. Each case carries a message a person can act on.
public enum BillingError: Error, Sendable, Hashable, CustomStringConvertible {
    /// A request parameter is missing or malformed: the parameter and the problem.
    case badParameter(String, String)
    /// The period has not started yet, or is not a valid `YYYY-MM`.
    case unknownPeriod(String)
    /// The ledger never received an event for this tenant and no plan assignment names it:
    /// there is nothing to bill it for.
    case unknownTenant(String)
    /// The pricing config does not allow this to be priced from aggregates.
    case unsupported(String)
    /// The pricing engine refused; its error is kept as it came.
    case pricing(PricingError)
    /// The pricing config names something it does not define.
    case pricingConfig(String)
    /// The ledger failed; its error is kept as it came.
    case ledger(LedgerError)
    /// The ledger could not be reached (the collector is shutting down).
    case ledgerUnavailable(String)
    case encoding(String)
    /// No pricing file is configured, so there are no charges or invoices.
    case noPricing

    public var description: String {
        switch self {
        case .badParameter(let name, let problem): "parameter '\(name)': \(problem)"
        case .unknownPeriod(let period): "unknown period '\(period)': give a month that has started, as YYYY-MM"
        case .unknownTenant(let tenant): "unknown tenant '\(tenant)': the ledger has no event for it and no plan assignment names it"
        case .unsupported(let what): "cannot price from aggregates: \(what)"
        case .pricing(let error): "pricing failed: \(error)"
        case .pricingConfig(let what): "pricing failed: \(what)"
        case .ledger(let error): "ledger read failed: \(error)"
        case .ledgerUnavailable(let why): "the ledger is unavailable: \(why)"
        case .encoding(let what): "encoding failed: \(what)"
        case .noPricing: "no pricing file is configured (--pricing FILE): charges and invoices are unavailable"
        }
    }
}

extension BillingError {
    /// What a failure while reading the ledger becomes: a billing error stays as it is, a ledger
    /// error is kept as it came, anything else means the ledger could not be reached.
    public static func reading(_ error: any Error) -> BillingError {
        switch error {
        case let error as BillingError: error
        case let error as LedgerError: .ledger(error)
        default: .ledgerUnavailable("\(error)")
        }
    }
}
