public import TallyCore

/// Framed spool records ready to append, in order: what ``Spool/append(_:completion:)-(EncodedBatch,_)``
/// writes. Built from ``UsageEvent``s, or from events read straight from their bytes
/// (``TallyCore/PlainEvent``), which give the same records.
public struct EncodedBatch: Sendable {
    var bytes: [UInt8] = []
    /// The end of each record inside `bytes`.
    var recordEnds: [Int] = []
    var timestamps: [Int64] = []

    /// An empty batch with room for about `capacity` events.
    public init(capacity: Int = 0) {
        bytes.reserveCapacity(capacity * 96)
        recordEnds.reserveCapacity(capacity)
        timestamps.reserveCapacity(capacity)
    }

    init(_ events: [UsageEvent]) throws(SpoolError) {
        self.init(capacity: events.count)
        for event in events { try append(event) }
    }

    /// The number of records.
    public var count: Int { recordEnds.count }

    /// Appends the record of `event`. Throws ``SpoolError/recordTooLarge(bytes:limit:)`` (and
    /// keeps nothing of it) when its payload is over the record limit.
    public mutating func append(_ event: UsageEvent) throws(SpoolError) {
        try appendRecord(timestamp: event.timestamp.microseconds) { EventRecordCodec.encode(event, into: &$0) }
    }

    /// Appends the record of an event read as `event` from `line`: the same record as that of
    /// the ``UsageEvent`` the line decodes to.
    public mutating func append(_ event: PlainEvent, in line: UnsafeBufferPointer<UInt8>) throws(SpoolError) {
        try appendRecord(timestamp: event.timestamp.microseconds) { EventRecordCodec.encode(event, in: line, into: &$0) }
    }

    private mutating func appendRecord(timestamp: Int64, encoding: (inout [UInt8]) -> Void) throws(SpoolError) {
        let start = bytes.count
        RecordFraming.appendRecord(encoding: encoding, to: &bytes)
        let payload = bytes.count - start - RecordFraming.headerBytes
        if payload > RecordFraming.maxPayloadBytes {
            bytes.removeSubrange(start...)
            throw .recordTooLarge(bytes: payload, limit: RecordFraming.maxPayloadBytes)
        }
        recordEnds.append(bytes.count)
        timestamps.append(timestamp)
    }
}

/// One segment file as the store knows it.
struct SegmentInfo {
    let id: UInt64
    /// The end of the written records.
    var size: Int64
    /// The end of the records known to be durable (fsynced); equal to `size` once sealed.
    var syncedSize: Int64
    var records: Int
    var syncedRecords: Int
    /// The oldest event time among the unacknowledged records (a lower bound when it comes from
    /// a summary: acknowledged records of the head segment may count).
    var minTimestamp: Int64?
    /// The oldest and newest event times of all the segment's records, for its summary.
    var allMin: Int64? = nil
    var allMax: Int64? = nil

    mutating func include(time: Int64, unacknowledged: Bool = true) {
        allMin = Swift.min(allMin ?? time, time)
        allMax = Swift.max(allMax ?? time, time)
        if unacknowledged { minTimestamp = Swift.min(minTimestamp ?? time, time) }
    }

    var summary: SegmentSummary {
        SegmentSummary(segment: id, size: size, records: records, oldest: allMin, newest: allMax)
    }
}
