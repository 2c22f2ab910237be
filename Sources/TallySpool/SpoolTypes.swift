public import TallyCore

/// Events read from the spool, oldest first, with the positions that bracket them.
///
/// `end` is the position to read from next and the position to acknowledge once the collector
/// has acknowledged these events; acknowledging it never frees anything after it.
public struct SpoolBatch: Sendable {
    public var start: SpoolPosition
    public var end: SpoolPosition
    public var events: [UsageEvent]
    /// The position of each event's record, parallel to `events`.
    public var positions: [SpoolPosition]
    /// Corrupt regions skipped (and quarantined, unless read-only) while reading this batch.
    public var skippedCorruptRegions: Int
    /// The read stopped at one of its limits (`maxEvents`, or `maxBytes` of records) with a
    /// record after `end`: the batch is as large as it may be, although it may hold fewer than
    /// `maxEvents` events (large records reach `maxBytes` first). False when the read reached the
    /// end of the durable records.
    public var reachedLimit = false
}

/// ``SpoolBatch`` with the events as ``EventSpans``: what the shipper reads, to encode the
/// records into a batch payload without a ``UsageEvent`` for each (``Spool/readSpans(from:maxEvents:maxBytes:)``).
public struct SpoolSpansBatch: Sendable {
    public var start: SpoolPosition
    public var end: SpoolPosition
    public var events: EventSpans
    public var skippedCorruptRegions: Int
    /// As ``SpoolBatch/reachedLimit``.
    public var reachedLimit = false
}

/// A batch a spool read fills record by record (``SpoolStore/read(_:from:maxEvents:maxBytes:includingAcknowledged:)``).
protocol SpoolReadBatch {
    init(at position: SpoolPosition)
    var start: SpoolPosition { get set }
    var end: SpoolPosition { get set }
    var skippedCorruptRegions: Int { get set }
    var reachedLimit: Bool { get set }
    /// The events added so far.
    var count: Int { get }
    /// Adds the event of a record's payload, or throws (and adds nothing) when it does not decode.
    mutating func add(payload: UnsafeRawBufferPointer, at position: SpoolPosition) throws(SpoolDecodingError)
}

extension SpoolBatch: SpoolReadBatch {
    init(at position: SpoolPosition) { self.init(start: position, end: position, events: [], positions: [], skippedCorruptRegions: 0) }
    var count: Int { events.count }

    mutating func add(payload: UnsafeRawBufferPointer, at position: SpoolPosition) throws(SpoolDecodingError) {
        events.append(try EventRecordCodec.decode(payload))
        positions.append(position)
    }
}

extension SpoolSpansBatch: SpoolReadBatch {
    init(at position: SpoolPosition) { self.init(start: position, end: position, events: EventSpans(), skippedCorruptRegions: 0) }
    var count: Int { events.count }

    mutating func add(payload: UnsafeRawBufferPointer, at position: SpoolPosition) throws(SpoolDecodingError) {
        try EventRecordCodec.decode(payload, into: &events)
    }
}

/// A corrupt stretch of a segment found by recovery, a read or ``Spool/verify()``.
public struct SpoolCorruption: Sendable, Hashable, CustomStringConvertible {
    public enum Kind: Sendable, Hashable {
        /// Bytes that are not a valid record (bad CRC, garbage length); skipped and quarantined.
        case corruptRecord
        /// A record whose CRC matches but whose payload this version cannot decode.
        case undecodableRecord
        /// A segment file header that is not Tally's.
        case badSegmentHeader
        /// An incomplete record at the end of a segment: an interrupted write, truncated away.
        case tornTail
        /// A segment that is gone or emptied although its number lies between segments that are
        /// there (numbers run in sequence): its unacknowledged events were lost outside the
        /// agent. Recorded in the quarantine file (a region of length 0 at offset 0).
        case missingSegment
        /// A checkpoint file with no valid slot: reading starts from the oldest segment.
        case badCheckpoint
        /// A `shipper.seq` file that cannot be read: the agent continues from a time-based
        /// sequence that cannot have been used (SPEC §6).
        case badSequenceFile
    }
    public var kind: Kind
    public var position: SpoolPosition
    public var length: UInt64

    public var description: String { "\(kind) at \(position), \(length) bytes" }
}

/// What opening the spool found and repaired. Nothing here is fatal: the spool is open.
public struct RecoveryReport: Sendable, Hashable {
    /// False when the checkpoint file was missing or unreadable; reading then starts from the
    /// oldest segment (events may be sent again; the collector dedupes them).
    public var checkpointFound = true
    /// Segments read record by record: the active one, and sealed ones without a valid summary.
    public var segmentsScanned = 0
    /// Sealed segments taken from their summaries without being scanned.
    public var segmentsFromSummary = 0
    /// Summaries written for sealed segments that had none (or a damaged or stale one).
    public var summariesWritten = 0
    public var recordsFound = 0
    /// Segments wholly before the checkpoint whose deletion had been interrupted; deleted now.
    public var ackedSegmentsDeleted = 0
    /// Zero-length or header-only files that were removed or re-initialised.
    public var emptySegmentsRepaired = 0
    /// Segments gone or emptied between others (see ``SpoolCorruption/Kind/missingSegment``).
    public var missingSegments: [UInt64] = []
    /// Torn tails truncated, corrupt regions quarantined, missing segments.
    public var problems: [SpoolCorruption] = []
    /// Why the batch-sequence lease (`shipper.seq`) could not continue from its stored mark and
    /// continues from the clock instead; nil when it could (or on a read-only open).
    public var sequenceRecovered: String?
}

/// A snapshot of the spool's backlog.
public struct SpoolStats: Sendable, Hashable {
    /// Valid records (events) not yet acknowledged.
    public var events: Int
    /// Bytes of segment files on disk (acknowledged bytes not yet deleted count).
    public var bytesOnDisk: Int64
    /// Bytes of records not yet acknowledged.
    public var backlogBytes: Int64
    public var segments: Int
    /// The oldest event time among segments that hold unacknowledged events (a lower bound:
    /// acknowledged events of the oldest segment may still count).
    public var oldestEventTime: EventTime?
    /// Corrupt regions held in the quarantine file (missing segments included).
    public var quarantinedRegions: Int
    /// Segments ever found missing or emptied (each also counts as a quarantined region).
    public var missingSegments: Int
    public var acknowledged: SpoolPosition
    /// The position after the last durable record.
    public var end: SpoolPosition
    /// Whether anything was ever acknowledged from this spool (the checkpoint is past the
    /// first record of the first segment): then a shipper has leased batch sequences.
    public var shipped: Bool
    /// The last write that failed (an append refused for space, a checkpoint that could not be
    /// stored), until a write succeeds; nil when writes work.
    public var writeFailure: String?
}

/// The outcome of ``Spool/verify()``: every record walked, nothing changed.
public struct SpoolVerification: Sendable, Hashable {
    public var segments = 0
    public var records = 0
    public var bytes: Int64 = 0
    public var problems: [SpoolCorruption] = []
    public var isClean: Bool { problems.isEmpty }
}
