/// A place in the spool: a segment number and a byte offset inside that segment's file.
///
/// Positions are totally ordered in the order records were appended: segment numbers only grow,
/// and inside a segment offsets only grow. A position returned by the spool is always at a
/// record boundary (or the end of the written data), so it can be passed back to `read(from:)`
/// and `acknowledge(upTo:)`.
public struct SpoolPosition: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var segment: UInt64
    public var offset: UInt64

    public init(segment: UInt64, offset: UInt64) {
        self.segment = segment
        self.offset = offset
    }

    public static func < (lhs: SpoolPosition, rhs: SpoolPosition) -> Bool {
        (lhs.segment, lhs.offset) < (rhs.segment, rhs.offset)
    }

    public var description: String { "\(segment):\(offset)" }
}
