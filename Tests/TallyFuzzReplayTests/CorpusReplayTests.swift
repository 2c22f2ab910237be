import Foundation
import TallyFuzzTargets
import TallyTestSupport
import Testing

/// `FuzzTesting/Corpus/`, found from this file's place in the repository.
let corpusDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("FuzzTesting/Corpus")

/// Every kept fuzz input (seeds, and every input that ever crashed or hung a target) replayed
/// through its target's entry point in the normal build. A regression traps, so this suite
/// fails loudly; a missing or emptied corpus fails it too.
@Suite("The kept fuzz corpus", .offThePool)
struct CorpusReplayTests {
    /// The regular files of a target's corpus folder, by name.
    static func inputs(of target: FuzzTarget) throws -> [URL] {
        let folder = corpusDirectory.appendingPathComponent(target.rawValue)
        let entries = try FileManager.default.contentsOfDirectory(
            at: folder, includingPropertiesForKeys: [.isRegularFileKey], options: [.skipsHiddenFiles])
        return try entries.filter { try $0.resourceValues(forKeys: [.isRegularFileKey]).isRegularFile == true }
            .sorted { $0.lastPathComponent < $1.lastPathComponent }
    }

    @Test("every input of a target's corpus replays", arguments: FuzzTarget.allCases)
    func replays(target: FuzzTarget) async throws {
        let inputs = try Self.inputs(of: target)
        #expect(!inputs.isEmpty, "FuzzTesting/Corpus/\(target.rawValue) holds no inputs")
        let replayed = await run(target, try inputs.map { [UInt8](try Data(contentsOf: $0)) })
        #expect(replayed == inputs.count)
    }

    @Test("the corpus has one folder per target, and no other")
    func foldersMatchTheTargets() throws {
        let folders = try FileManager.default.contentsOfDirectory(atPath: corpusDirectory.path).filter { !$0.hasPrefix(".") }
        #expect(Set(folders) == Set(FuzzTarget.allCases.map(\.rawValue)))
    }
}

/// Runs inputs through `target` on a thread of their own, as libFuzzer does: an entry point
/// blocks its thread (the spool target waits for the spool's async API), which on a thread of
/// Swift concurrency's pool could starve the tasks it waits for. Returns how many ran.
func run(_ target: FuzzTarget, _ inputs: [[UInt8]]) async -> Int {
    await withCheckedContinuation { continuation in
        let thread = Thread {
            var count = 0
            for input in inputs {
                target.run(input)
                count += 1
            }
            continuation.resume(returning: count)
        }
        thread.start()
    }
}
