import Testing
import TallyCore

@testable import TallyWorkload

@Suite("The workload's own random numbers")
struct WorkloadRandomTests {
    @Test("SplitMix64 matches the reference outputs for seed 0")
    func splitMixVector() {
        var mixer = SplitMix64(seed: 0)
        #expect(mixer.next() == 0xE220_A839_7B1D_CDAF)
        #expect(mixer.next() == 0x6E78_9E6A_A1B9_65F4)
        #expect(mixer.next() == 0x06C4_5D18_8009_454F)
    }

    @Test("the stream is a pure function of the seed")
    func sameSeedSameStream() {
        var a = WorkloadRandom(seed: 42)
        var b = WorkloadRandom(seed: 42)
        var c = WorkloadRandom(seed: 43)
        let first = (0..<100).map { _ in a.next() }
        #expect(first == (0..<100).map { _ in b.next() })
        #expect(first != (0..<100).map { _ in c.next() })
    }

    @Test("bounded draws stay in bounds and cover them")
    func boundedDraws() {
        var random = WorkloadRandom(seed: 7)
        var seen = Set<UInt64>()
        for _ in 0..<10_000 {
            let value = random.next(below: 10)
            #expect(value < 10)
            seen.insert(value)
        }
        #expect(seen.count == 10)
        for _ in 0..<1_000 {
            #expect((-5...5).contains(random.next(in: -5...5)))
        }
        #expect(random.next(in: 3...3) == 3)
    }

    @Test("a weighted choice follows its integer weights")
    func weightedChoice() {
        let choice = WeightedChoice(weights: [1, 3])
        #expect(choice.cumulative == [1, 4])
        var random = WorkloadRandom(seed: 1)
        var counts = [0, 0]
        for _ in 0..<40_000 { counts[choice.sample(&random)] += 1 }
        #expect((9_000...11_000).contains(counts[0]))
        #expect(counts[0] + counts[1] == 40_000)
    }
}
