import TallyAgent
import TallyCLI
import Testing

@Suite("Collector rotation: which collector an agent starts at and where it goes next")
struct CollectorRotationTests {
    /// The hash is part of how fleets spread: changing it would move every agent at the next
    /// upgrade. These values come from an independent implementation (Python) of FNV-1a 64 plus
    /// the SplitMix64 finaliser.
    @Test func theHashIsPinned() {
        #expect(CollectorRotation.hash(agentId: "") == 0xF52A_15E9_A9B5_E89B)
        #expect(CollectorRotation.hash(agentId: "test-agent") == 0xBF0B_DA2F_5F75_C597)
        #expect(CollectorRotation.hash(agentId: "edge-a") == 0x8551_1BAD_6DC5_A2E6)
        #expect(CollectorRotation.hash(agentId: "edge-b") == 0x66C5_2AA9_3745_8A2F)
        // The README's two-agent cluster puts one agent on each collector.
        #expect(CollectorRotation.start(agentId: "edge-a", count: 2).index == 0)
        #expect(CollectorRotation.start(agentId: "edge-b", count: 2).index == 1)
    }

    @Test func theStartIsStableAcrossCalls() {
        for id in ["edge-a", "api-7f3a.eu-west-1", "", "ünïcode-agent", String(repeating: "x", count: 128)] {
            for count in 1...6 {
                let first = CollectorRotation.start(agentId: id, count: count)
                #expect((0..<count).contains(first.index))
                for _ in 0..<3 { #expect(CollectorRotation.start(agentId: id, count: count) == first) }
            }
        }
    }

    @Test func everyIndexIsReachable() {
        for count in 1...8 {
            let reached = Set((0..<500).map { CollectorRotation.start(agentId: "agent-\($0)", count: count).index })
            #expect(reached == Set(0..<count), "\(count) collectors: reached \(reached.sorted())")
        }
    }

    /// A fleet of 3000 agents: each of 2, 3 or 5 collectors gets its even share ± 10%. Three id
    /// shapes: numbered names, host names that differ in the middle, and pod names.
    @Test(arguments: ["numbered", "hosts", "pods"])
    func aFleetSpreadsEvenly(shape: String) {
        func name(_ index: Int) -> String {
            switch shape {
            case "numbered": "agent-\(index)"
            case "hosts": "api-\(index).eu-west-1.example.com"
            default: "edge-\(index % 60)-pod-\(index / 60)"
            }
        }
        for count in [2, 3, 5] {
            let fleet = 3_000
            var perCollector = [Int](repeating: 0, count: count)
            for index in 0..<fleet { perCollector[CollectorRotation.start(agentId: name(index), count: count).index] += 1 }
            let even = fleet / count
            let allowed = (even - even / 10)...(even + even / 10)
            #expect(perCollector.allSatisfy { allowed.contains($0) }, "\(count) collectors, \(shape) ids: \(perCollector)")
        }
    }

    @Test func failuresWalkEveryCollectorInListOrderAndWrap() {
        for count in 1...5 {
            for id in ["edge-a", "edge-b", "agent-17"] {
                var rotation = CollectorRotation.start(agentId: id, count: count)
                let start = rotation.index
                let visited = (0..<count).map { _ in rotation.next() }
                let expected = (1...count).map { (start + $0) % count }
                #expect(visited == expected, "\(id) over \(count): \(visited)")
                #expect(rotation.index == start)
                #expect(rotation.canMove == (count > 1))
            }
        }
    }

    @Test func aCountUnderOneCountsAsOne() {
        var rotation = CollectorRotation.start(agentId: "edge-a", count: 0)
        #expect(rotation.count == 1 && rotation.index == 0)
        #expect(rotation.next() == 0)
    }
}

@Suite("The --collector list of tally-agent and tallyctl spool drain")
struct CollectorListFlagTests {
    @Test func theAgentTakesEveryCollectorInOrderAndItsHelpStatesTheRule() throws {
        let run = try AgentCommand.Run.parse(["--collector", "10.0.0.1:7400", "--collector", "10.0.0.2:7400", "--collector", "10.0.0.3:7400"])
        #expect(try run.agentConfig().collectors.map(\.host) == ["10.0.0.1", "10.0.0.2", "10.0.0.3"])
        let help = AgentCommand.Run.helpMessage(columns: 400)
        #expect(!help.contains("preferred"))
        #expect(help.contains("agent id picks"))
    }

    @Test func drainTakesTheSameListAndRequiresOne() throws {
        let drain = try SpoolDrainCommand.parse(["--collector", "10.0.0.1:7400", "--collector", "10.0.0.2:7400", "--agent-id", "edge-a"])
        #expect(drain.collector == ["10.0.0.1:7400", "10.0.0.2:7400"])
        #expect(throws: (any Error).self) { _ = try SpoolDrainCommand.parse(["--agent-id", "edge-a"]) }
        let help = SpoolDrainCommand.helpMessage(columns: 400)
        #expect(!help.contains("preferred"))
        #expect(help.contains("agent id picks"))
    }
}
