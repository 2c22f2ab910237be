import TallyCore

/// The reference workload's random numbers: xoshiro256** seeded through SplitMix64.
///
/// Tally does not use the system generator (or Swift's `SystemRandomNumberGenerator`) because the
/// workload must be byte-for-byte the same for a seed on every platform, toolchain and run: the
/// benchmarks, the demo and the end-to-end tests compare against totals computed from it. Both
/// algorithms are fully specified integer arithmetic (Blackman and Vigna, 2018), so the stream
/// is portable; nothing here touches floating point.
public struct WorkloadRandom: Sendable {
    private var s0: UInt64
    private var s1: UInt64
    private var s2: UInt64
    private var s3: UInt64

    /// A generator whose whole stream is determined by `seed`.
    public init(seed: UInt64) {
        var mixer = SplitMix64(seed: seed)
        s0 = mixer.next()
        s1 = mixer.next()
        s2 = mixer.next()
        s3 = mixer.next()
        // The all-zero state is xoshiro's one fixed point; SplitMix64 cannot produce it, but
        // rule it out explicitly.
        if s0 | s1 | s2 | s3 == 0 { s0 = 0x9E37_79B9_7F4A_7C15 }
    }

    /// The next 64 random bits (xoshiro256**).
    public mutating func next() -> UInt64 {
        let result = Self.rotateLeft(s1 &* 5, 7) &* 9
        let t = s1 << 17
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        s3 = Self.rotateLeft(s3, 45)
        return result
    }

    /// A uniform integer in `0..<bound` (`bound` > 0), without modulo bias (D. Lemire's
    /// multiply-and-reject method).
    public mutating func next(below bound: UInt64) -> UInt64 {
        precondition(bound > 0, "the bound of a random draw must be positive")
        var product = bound.multipliedFullWidth(by: next())
        if product.low < bound {
            let threshold = (0 &- bound) % bound
            while product.low < threshold {
                product = bound.multipliedFullWidth(by: next())
            }
        }
        return product.high
    }

    /// A uniform integer in `range`.
    public mutating func next(in range: ClosedRange<Int64>) -> Int64 {
        let span = UInt64(bitPattern: range.upperBound &- range.lowerBound) &+ 1
        if span == 0 { return Int64(bitPattern: next()) }  // the whole Int64 range
        return range.lowerBound &+ Int64(bitPattern: next(below: span))
    }

    private static func rotateLeft(_ value: UInt64, _ count: UInt64) -> UInt64 {
        (value << count) | (value >> (64 &- count))
    }
}

/// A discrete distribution over `0..<count` given by integer weights, sampled through an
/// integer cumulative table: the choice never depends on floating point, so it is the same on
/// every platform.
public struct WeightedChoice: Sendable {
    /// `cumulative[i]` is the sum of the weights of `0...i`.
    public let cumulative: [UInt64]
    public var total: UInt64 { cumulative.last ?? 0 }
    public var count: Int { cumulative.count }

    /// A distribution from weights; every weight must be positive and the total must fit 64 bits.
    public init(weights: [UInt64]) {
        precondition(!weights.isEmpty && weights.allSatisfy { $0 > 0 }, "weights must be positive")
        var running: UInt64 = 0
        var table: [UInt64] = []
        table.reserveCapacity(weights.count)
        for weight in weights {
            let (sum, overflow) = running.addingReportingOverflow(weight)
            precondition(!overflow, "the total weight must fit in 64 bits")
            running = sum
            table.append(running)
        }
        cumulative = table
    }

    /// The index whose cumulative range contains a uniform draw in `0..<total`.
    public func sample(_ random: inout WorkloadRandom) -> Int {
        let draw = random.next(below: total)
        // The first index with cumulative[index] > draw.
        var low = 0
        var high = cumulative.count - 1
        while low < high {
            let middle = (low + high) / 2
            if cumulative[middle] > draw { high = middle } else { low = middle + 1 }
        }
        return low
    }
}
