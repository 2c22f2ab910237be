import TallyCore
import TallySpool
import Testing
@testable import TallyAgent

/// The agent frees spool data only up to the end of the contiguous acknowledged prefix.
@Suite struct SpoolWindowTests {
    func position(_ offset: UInt64) -> SpoolPosition { SpoolPosition(segment: 1, offset: offset) }

    @Test func outOfOrderAcksFreeNothingUntilThePrefixIsAcked() {
        var window = SpoolWindow()
        for (sequence, end) in [(UInt64(10), UInt64(100)), (11, 200), (12, 300)] {
            let accepted = window.cut(sequence: sequence, end: position(end), events: 5)
            #expect(accepted)
        }
        let late = window.acknowledge(12)
        let middle = window.acknowledge(11)
        #expect(late?.events == 5 && late?.freeUpTo == nil)
        #expect(middle?.events == 5 && middle?.freeUpTo == nil)
        #expect(window.unacknowledged == 1 && window.count == 3)
        let first = window.acknowledge(10)
        #expect(first?.events == 5 && first?.freeUpTo == position(300))
        #expect(window.isEmpty)
        // Acks for batches freed already, or never cut, change nothing.
        let again = window.acknowledge(10)
        let unknown = window.acknowledge(99)
        #expect(again == nil && unknown == nil)
    }

    @Test func aSequenceOrSpoolRangeIsNeverCutTwice() {
        var window = SpoolWindow()
        let first = window.cut(sequence: 1, end: position(10), events: 1)
        let sameSequence = window.cut(sequence: 1, end: position(20), events: 1)
        let sameRange = window.cut(sequence: 2, end: position(10), events: 1)
        #expect(first && !sameSequence && !sameRange)
        #expect(window.count == 1)
    }

    /// Seeded: for any interleaving of cuts and acks (out of order, repeated, unknown), the
    /// freed position never passes a batch that is not acked, and each batch is freed once.
    @Test(arguments: 0..<50)
    func neverFreesPastAnUnacknowledgedBatch(seed: Int) {
        var random = TestRandom(seed: UInt64(seed))
        var window = SpoolWindow()
        var cut: [(sequence: UInt64, start: UInt64, end: UInt64)] = []
        var acked: Set<UInt64> = []
        var freed: UInt64 = 0
        var nextSequence: UInt64 = 1_000
        var nextEnd: UInt64 = 0
        for _ in 0..<400 {
            if random.next(below: 3) == 0 || cut.count == acked.count {
                let start = nextEnd
                nextEnd += 1 + random.next(below: 50)
                nextSequence += 1 + random.next(below: 3)
                let accepted = window.cut(sequence: nextSequence, end: position(nextEnd), events: 1)
                #expect(accepted)
                cut.append((nextSequence, start, nextEnd))
            } else {
                // Mostly an unacked batch; sometimes a repeated or unknown ack.
                let pick = random.next(below: 10)
                let sequence =
                    pick == 0
                    ? nextSequence + 7
                    : pick == 1 ? (acked.first ?? 1) : cut.filter { !acked.contains($0.sequence) }.randomElement(using: &random)?.sequence ?? 1
                let answer = window.acknowledge(sequence)
                if cut.contains(where: { $0.sequence == sequence }) && !acked.contains(sequence) {
                    #expect(answer != nil)
                    acked.insert(sequence)
                } else {
                    #expect(answer == nil)
                }
                if let to = answer?.freeUpTo {
                    #expect(to.offset > freed, "freed twice or backwards")
                    freed = to.offset
                }
            }
            // The freed position is at most the start of the first unacked batch.
            if let firstUnacked = cut.first(where: { !acked.contains($0.sequence) }) {
                #expect(freed <= firstUnacked.start, "freed \(freed) past unacked batch \(firstUnacked.sequence) starting at \(firstUnacked.start)")
            }
            #expect(window.unacknowledged == cut.count - acked.count)
        }
    }
}

/// The seeded generator of these tests.
typealias TestRandom = SplitMix64

extension SplitMix64 {
    mutating func next(below bound: UInt64) -> UInt64 { next() % bound }
}
