/// Which of its collectors an agent uses, and where it goes next.
///
/// Guarantees:
/// - The first collector is a stable function of the agent id alone: the same id with the same
///   number of collectors starts at the same index in every process, on every platform and in
///   every release (FNV-1a 64 over the id's UTF-8 bytes, finished with the SplitMix64 mixer,
///   modulo the count). `tallyctl spool drain` under the agent's id starts where the agent does.
/// - A fleet whose agents list the same collectors spreads evenly across them, with no
///   coordination and no load balancer.
/// - ``next()`` moves to the following collector in list order, wrapping, so a run of failures
///   visits every collector once before it comes back to the first.
public struct CollectorRotation: Sendable, Hashable {
    /// How many collectors there are (at least 1).
    public let count: Int
    /// The collector in use, an index into the list.
    public private(set) var index: Int

    /// The rotation of the agent `agentId` over `count` collectors (a count under 1 counts as 1).
    public static func start(agentId: String, count: Int) -> CollectorRotation {
        let count = max(1, count)
        return CollectorRotation(count: count, index: Int(hash(agentId: agentId) % UInt64(count)))
    }

    /// Moves to the next collector in list order (wrapping); returns its index.
    @discardableResult
    public mutating func next() -> Int {
        index = (index + 1) % count
        return index
    }

    /// Whether there is another collector to move to.
    public var canMove: Bool { count > 1 }

    /// The 64-bit hash that picks the first collector: FNV-1a 64 over the UTF-8 bytes, then the
    /// SplitMix64 finaliser so that ids differing only in their last characters (`edge-1`,
    /// `edge-2`, ...) land on unrelated low bits.
    public static func hash(agentId: String) -> UInt64 {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in agentId.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01B3
        }
        hash = (hash ^ (hash >> 30)) &* 0xBF58_476D_1CE4_E5B9
        hash = (hash ^ (hash >> 27)) &* 0x94D0_49BB_1331_11EB
        return hash ^ (hash >> 31)
    }
}
