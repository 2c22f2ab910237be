import TallyCore

/// Events encoded into framed records, ready to be written in one go.
struct EncodedBatch: Sendable {
    var bytes: [UInt8] = []
    /// The end of each record inside `bytes`.
    var recordEnds: [Int] = []
    var timestamps: [Int64] = []

    init(_ events: [UsageEvent]) throws(SpoolError) {
        bytes.reserveCapacity(events.count * 96)
        recordEnds.reserveCapacity(events.count)
        timestamps.reserveCapacity(events.count)
        for event in events {
            let start = bytes.count
            RecordFraming.appendRecord(encoding: { EventRecordCodec.encode(event, into: &$0) }, to: &bytes)
            let payload = bytes.count - start - RecordFraming.headerBytes
            if payload > RecordFraming.maxPayloadBytes {
                throw .recordTooLarge(bytes: payload, limit: RecordFraming.maxPayloadBytes)
            }
            recordEnds.append(bytes.count)
            timestamps.append(event.timestamp.microseconds)
        }
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
