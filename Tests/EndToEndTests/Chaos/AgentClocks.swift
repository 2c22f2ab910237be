import Foundation

/// The agents' wall clocks, each stepped at will by a chaos run: every agent runs with
/// `TALLY_FAULT_CLOCK_FILE` (``ClockFault``) naming a file of its own that holds its offset from
/// the true time in seconds; the agent reads it at most 100 ms late. Only the wall clock moves
/// (every time the agent judges events by, and stamps); its timers run on the monotonic clock.
final class AgentClocks: Sendable {
    let files: [URL]

    /// One clock file per agent in `directory`, each at offset zero.
    init(directory: URL, agents: Int) throws {
        files = (0..<agents).map { directory.appendingPathComponent("agent-\($0).clock") }
        for index in files.indices { try step(index, toOffsetSeconds: 0) }
    }

    /// The environment that puts agent `index` on its clock.
    func environment(of index: Int) -> [String: String] { ["TALLY_FAULT_CLOCK_FILE": files[index].path] }

    /// Agent `index`'s wall clock runs `seconds` away from the true time from now on. The file
    /// is replaced whole, so the agent never reads half of it.
    func step(_ index: Int, toOffsetSeconds seconds: Int) throws {
        try Data("\(seconds)\n".utf8).write(to: files[index], options: .atomic)
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: files[index].path)
    }
}
