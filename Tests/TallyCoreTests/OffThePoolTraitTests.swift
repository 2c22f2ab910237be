import Foundation
import TallyCore
import TallyTestSupport
import Testing

/// The test suite's own tool (TallyTestSupport's ``OffThePoolTrait``): a test marked
/// `.offThePool` runs on the dedicated threads, at nice 10, and an unmarked one does not.
@Suite struct OffThePoolTraitTests {
    @Test(.offThePool, arguments: [1, 2, 3])
    func aMarkedTestRunsOnADedicatedThread(_ round: Int) {
        #expect(ThreadName.current().hasPrefix("test-off-pool-"), "round \(round): \(ThreadName.current())")
        #expect(BackgroundPriority.currentThreadNiceness() == 10)
    }

    @Test func anUnmarkedTestDoesNot() {
        #expect(!ThreadName.current().hasPrefix("test-off-pool-"), "\(ThreadName.current())")
    }

    @Test(.offThePool) func childTasksFollowAndAnAwaitComesBackThere() async {
        async let child = Self.threadName()
        #expect(await child.hasPrefix("test-off-pool-"))
        await Task.yield()
        #expect(Self.currentThreadName().hasPrefix("test-off-pool-"))
    }

    static func threadName() async -> String { currentThreadName() }
    static func currentThreadName() -> String { ThreadName.current() }
}
