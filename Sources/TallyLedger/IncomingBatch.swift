public import TallyCore

/// One batch as the collector decoded it: who sent it, its sequence, when it arrived, and its
/// events in order. Fingerprints are not part of it: the ledger computes them itself.
public struct IncomingBatch: Sendable, Hashable {
    public var agent: String
    public var sequence: UInt64
    /// When the collector received the batch; also the `now` for late classification, so that a
    /// replay is classified exactly as the original was.
    public var receivedAt: EventTime
    public var events: [IncomingEvent]

    public init(agent: String, sequence: UInt64, receivedAt: EventTime, events: [IncomingEvent]) {
        self.agent = agent
        self.sequence = sequence
        self.receivedAt = receivedAt
        self.events = events
    }
}

/// One decoded event of a batch: a valid event, or one refused while decoding (kept with
/// whatever fields were known, so the refusal can be explained).
public enum IncomingEvent: Sendable, Hashable {
    /// An event that passed ``UsageEvent/validate(limits:now:)`` at the collector's decoder.
    case valid(UsageEvent)
    case invalid(InvalidEvent)
}

/// An event refused before it reached the ledger, with its reason and the fields that could be
/// read. Kept in the ledger and counted as rejected.
public struct InvalidEvent: Sendable, Hashable {
    public var rejection: EventRejection
    public var tenant: String?
    public var metric: String?
    public var timestamp: EventTime?
    public var id: String?
    /// The event's source text as received (e.g. its JSON), when there was one.
    public var source: String?

    public init(
        _ rejection: EventRejection, tenant: String? = nil, metric: String? = nil, timestamp: EventTime? = nil,
        id: String? = nil, source: String? = nil
    ) {
        self.rejection = rejection
        self.tenant = tenant
        self.metric = metric
        self.timestamp = timestamp
        self.id = id
        self.source = source
    }
}

/// What became of a batch. Equal for the original commit and every replay of it.
///
/// Every event is in exactly one count: `received == accepted + duplicate + late + rejected`.
/// `late` counts events of closed periods, both those billed as adjustments (`adjusted` of them)
/// and those refused by the `reject` policy.
public struct BatchOutcome: Sendable, Hashable {
    /// An event that is not billed and is not a duplicate, with its reason.
    public struct Rejection: Sendable, Hashable {
        public var index: Int
        public var reason: RejectionReason
        public init(index: Int, reason: RejectionReason) {
            self.index = index
            self.reason = reason
        }
    }

    public var accepted = 0
    public var duplicate = 0
    public var late = 0
    /// Of `late`, how many were billed as adjustments in an open period.
    public var adjusted = 0
    public var rejected = 0
    /// In index order: every rejected event (with its reason) and every late event refused by
    /// the `reject` policy (reason `late`).
    public var rejections: [Rejection] = []

    public init() {}

    public var received: Int { accepted + duplicate + late + rejected }
}

/// The status of an event in the ledger. Raw values are stored; they never change.
public enum EventStatus: String, Sendable, Hashable, CaseIterable {
    /// Billed in its own period.
    case accepted
    /// Same fingerprint as an event already in the ledger (or earlier in its batch): not billed,
    /// recorded as a reference to the original.
    case duplicate
    /// Its period was closed and the policy is `reject`: kept, not billed.
    case late
    /// Its period was closed and the policy is `adjust`: billed in a later open period.
    case adjusted
    /// Refused (invalid, too old, from the future): kept with its reason, not billed.
    case rejected
}

/// A batch with the per-event work that needs no database done ahead: fingerprints, the
/// content digest, and the stored forms of quantities and properties. The collector prepares a
/// batch on its connection's task, so the ledger's single writer thread spends its time in
/// the database; a store given a plain ``IncomingBatch`` prepares it itself. Each event's
/// canonical encoding is made once and serves both its fingerprint and the digest.
public struct PreparedBatch: Sendable {
    public let batch: IncomingBatch
    /// A digest of what the batch holds, in order: each event's canonical encoding (valid
    /// events) or its rejection, reason and known key fields (invalid ones). Equal for a resend
    /// of the same batch; different when a sequence number is reused for other events.
    public let contentDigest: [UInt8]
    /// Per event index: the fingerprint of a valid event, nil for an invalid one.
    let fingerprints: [Fingerprint?]
    /// Per event index: `Quantity.description` of a valid event ("" for an invalid one).
    let quantities: [String]
    /// Every event's stored properties blob (empty for an invalid one), one after another, and
    /// where each ends (``properties(_:)``): one buffer for the batch rather than an array per
    /// event, whose allocation and growth were a tenth of a preparation thread's time.
    private let propertyBytes: [UInt8]
    private let propertyEnds: [Int]
    /// The commit's pure steps done ahead on a preparation thread (``BatchSpeculator``), or nil.
    public internal(set) var speculation: LedgerSpeculation?

    public init(_ batch: IncomingBatch) {
        self.batch = batch
        // The digest is SHA-256 over every event's piece in order, fed as each is made rather
        // than concatenated first (~150 KB for a batch of 1,000, grown by doubling).
        let digest = SHA256Digest.Incremental()
        var piece: [UInt8] = []
        var canonical: [UInt8] = []
        var fingerprints: [Fingerprint?] = []
        var quantities: [String] = []
        var propertyBytes: [UInt8] = []
        var propertyEnds: [Int] = []
        fingerprints.reserveCapacity(batch.events.count)
        quantities.reserveCapacity(batch.events.count)
        propertyEnds.reserveCapacity(batch.events.count)
        // About what the reference workload's events take (three short properties); a buffer
        // that outgrows it doubles.
        propertyBytes.reserveCapacity(batch.events.count * 64)
        for (step, event) in batch.events.enumerated() {
            // A fingerprint (SHA-256 of the canonical bytes) and the rest take ~1.5 µs an event.
            YieldPoint.after(step: step, every: 64)
            switch event {
            case .valid(let usage):
                canonical.removeAll(keepingCapacity: true)
                CanonicalEncoding.append(usage, to: &canonical)
                fingerprints.append(Fingerprint(canonicalBytes: canonical))
                withUnsafeBytes(of: UInt8(1)) { digest.update($0) }
                canonical.withUnsafeBytes { digest.update($0) }
                quantities.append(usage.quantity.description)
                PropertiesCodec.append(usage.properties, to: &propertyBytes)
                propertyEnds.append(propertyBytes.count)
            case .invalid(let invalid):
                fingerprints.append(nil)
                quantities.append("")
                propertyEnds.append(propertyBytes.count)
                piece.removeAll(keepingCapacity: true)
                piece.append(2)
                for text in [invalid.rejection.reason.rawValue, invalid.tenant ?? "", invalid.metric ?? "", invalid.id ?? ""] {
                    piece.appendString32(text)
                }
                piece.appendBigEndian(UInt64(bitPattern: invalid.timestamp?.microseconds ?? .min), bytes: 8)
                piece.withUnsafeBytes { digest.update($0) }
            }
        }
        // A fingerprint's 16 bytes: the first half of the SHA-256.
        self.contentDigest = Array(digest.finish().prefix(16))
        self.fingerprints = fingerprints
        self.quantities = quantities
        self.propertyBytes = propertyBytes
        self.propertyEnds = propertyEnds
    }

    /// The stored properties blob of the event at `index` (empty for an invalid one).
    func properties(_ index: Int) -> ArraySlice<UInt8> {
        propertyBytes[(index == 0 ? 0 : propertyEnds[index - 1])..<propertyEnds[index]]
    }
}
