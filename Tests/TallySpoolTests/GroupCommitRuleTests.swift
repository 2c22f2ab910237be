import Testing
@testable import TallySpool

/// The spool's group-commit rule, with an explicit clock (nanoseconds).
@Suite struct GroupCommitRuleTests {
    static let ms: UInt64 = 1_000_000

    @Test func intervalSyncsAtOnceAfterAQuietSpellThenAtMostOncePerInterval() {
        var commit = GroupCommit(policy: .interval(.milliseconds(10)))
        #expect(!commit.isDue(at: 0))
        // The first append after a quiet spell: due at once (nothing was synced lately).
        commit.appended(at: 100 * Self.ms)
        #expect(commit.deadline == 100 * Self.ms)
        #expect(commit.isDue(at: 100 * Self.ms))
        commit.synced(at: 101 * Self.ms)
        // Appends right after a sync wait for the interval; they share one sync.
        commit.appended(at: 102 * Self.ms)
        commit.appended(at: 105 * Self.ms)
        #expect(commit.deadline == 111 * Self.ms)
        #expect(!commit.isDue(at: 110 * Self.ms))
        #expect(commit.isDue(at: 111 * Self.ms))
        commit.synced(at: 112 * Self.ms)
        #expect(!commit.hasPending && commit.deadline == nil && !commit.isDue(at: 500 * Self.ms))
        // An append long after the last sync is due when written.
        commit.appended(at: 300 * Self.ms)
        #expect(commit.isDue(at: 300 * Self.ms))
    }

    @Test func alwaysIsDueWheneverSomethingWaitsNeverIsNever() {
        var always = GroupCommit(policy: .always)
        #expect(!always.isDue(at: 0))
        always.appended(at: 5)
        #expect(always.isDue(at: 5) && always.deadline == nil)
        var never = GroupCommit(policy: .never)
        #expect(never.completesWithoutSync)
        never.appended(at: 5)
        #expect(!never.isDue(at: .max))
    }

    @Test func anAwaitedAppendIsDueAtOnceWhenNoOtherIsOnItsWay() {
        var commit = GroupCommit(policy: .interval(.milliseconds(10)))
        commit.appended(at: 0)
        commit.synced(at: 1 * Self.ms)
        // A stream's append waits for the window, even with nothing on its way.
        commit.appended(at: 2 * Self.ms)
        #expect(!commit.isDue(at: 2 * Self.ms, arriving: 0))
        // An awaited one (an HTTP request) is due at once, unless another is on its way.
        commit.appended(at: 3 * Self.ms, awaited: true)
        #expect(commit.awaitedPending == 1)
        #expect(!commit.isDue(at: 3 * Self.ms, arriving: 1))
        #expect(commit.isDue(at: 3 * Self.ms, arriving: 0))
        #expect(commit.isDue(at: 11 * Self.ms, arriving: 5), "the window still bounds the wait for one on its way")
        // A sync covers the awaited appends: the next stream append waits for the window again.
        commit.synced(at: 4 * Self.ms)
        #expect(commit.awaitedPending == 0)
        commit.appended(at: 5 * Self.ms)
        #expect(!commit.isDue(at: 5 * Self.ms, arriving: 0))
        commit.appended(at: 6 * Self.ms, awaited: true)
        commit.dropped()
        #expect(commit.awaitedPending == 0 && !commit.isDue(at: 6 * Self.ms, arriving: 0), "a failed sync forgets them too")
    }

    @Test func aFailedSyncLeavesNothingPending() {
        var commit = GroupCommit(policy: .interval(.milliseconds(10)))
        commit.appended(at: 1)
        commit.dropped()
        #expect(!commit.hasPending && !commit.isDue(at: .max))
    }
}
