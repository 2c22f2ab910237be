import Foundation

/// What a chaos run did and found, printed as one table.
struct ChaosReport {
    let store: String
    let seed: UInt64
    let cycles: Int
    let faults: [ChaosFault: Int]
    /// The faults this run could inject here (each is injected at least once when the run has
    /// as many cycles).
    let possibleFaults: Set<ChaosFault>
    let proxy: ProxyTally
    /// Batches a collector could not commit (its store failed: a full disk, PostgreSQL down).
    let failedCommits: Int
    let oracle: ChaosOracle.Counts
    let verdict: ChaosVerdict
    let faultTime: Duration
    let drainTime: Duration
    let wallTime: Duration

    var discrepancies: Int { verdict.discrepancyCount }

    var table: String {
        var rows: [(String, String)] = [
            ("store", store),
            ("seed (TALLY_CHAOS_SEED to replay the schedule)", "\(seed)"),
            ("fault cycles", "\(cycles)"),
        ]
        for fault in ChaosFault.allCases { rows.append(("  \(fault.rawValue)", "\(faults[fault] ?? 0)")) }
        rows += [
            ("  proxy: cuts mid-frame / between frames", "\(proxy.cutsMidFrame) / \(proxy.cutsBetweenFrames)"),
            ("  proxy: acks dropped, batches duplicated, reordered", "\(proxy.acksDropped), \(proxy.batchesDuplicated), \(proxy.batchesReordered)"),
            (
                "  proxy: frames delayed, connections, refused by a collector",
                "\(proxy.framesDelayed), \(proxy.connections), \(proxy.refusedUpstream)"
            ),
            ("  batches a collector could not commit (store failed)", "\(failedCommits)"),
            ("requests posted / acknowledged (200)", "\(oracle.posts) / \(oracle.acknowledgedRequests)"),
            ("  refused (503, 429...) / no answer (agent down)", "\(oracle.refusedPosts) / \(oracle.failedPosts)"),
            ("  client retries to the same / another agent", "\(oracle.retriesToSameAgent) / \(oracle.retriesToOtherAgent)"),
            ("events acknowledged (distinct ids)", "\(verdict.eventsAcknowledged)"),
            ("events billed (usage count)", "\(verdict.eventsBilled)"),
            ("duplicates explained by the collector", "\(verdict.duplicatesExplained)"),
            ("faults / drain / whole run", "\(seconds(faultTime)) / \(seconds(drainTime)) / \(seconds(wallTime))"),
            ("discrepancies", "\(discrepancies)"),
        ]
        let width = rows.map(\.0.count).max() ?? 0
        var lines = ["chaos run on \(store)"]
        lines += rows.map { name, value in name + String(repeating: " ", count: width - name.count) + "  " + value }
        lines += verdict.discrepancies.map { "  DISCREPANCY \($0)" }
        return lines.joined(separator: "\n")
    }

    private func seconds(_ duration: Duration) -> String {
        let (whole, fraction) = duration.components
        return "\(whole).\(fraction / 100_000_000_000_000_000) s"
    }
}
