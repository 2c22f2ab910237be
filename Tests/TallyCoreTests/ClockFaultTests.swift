import Foundation
import Testing

@testable import TallyCore

/// The test-only clock fault the chaos suite skews agents with (`TALLY_FAULT_CLOCK_FILE`).
struct ClockFaultTests {
    @Test func theOffsetIsTheFilesAndFollowsItsChanges() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("clock-fault-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("clock")
        let fault = ClockFault(path: file.path, refresh: .zero)

        #expect(fault.offset() == 0, "no file yet: no offset")
        try Data("-600\n".utf8).write(to: file)
        #expect(fault.offset() == -600_000_000)
        try Data("+90".utf8).write(to: file)
        #expect(fault.offset() == 90_000_000)
        try Data("not a number".utf8).write(to: file)
        #expect(fault.offset() == 90_000_000, "an unreadable file keeps the last offset")
        try FileManager.default.removeItem(at: file)
        #expect(fault.offset() == 90_000_000)
        try Data("0".utf8).write(to: file)
        #expect(fault.offset() == 0)
    }

    @Test func theFileIsReadAgainOnlyAfterTheRefreshInterval() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("clock-fault-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("clock")
        try Data("60".utf8).write(to: file)
        let fault = ClockFault(path: file.path, refresh: .seconds(3600))
        #expect(fault.offset() == 60_000_000)
        try Data("120".utf8).write(to: file)
        #expect(fault.offset() == 60_000_000, "read again within the hour")
    }

    @Test func withoutTheVariableTheProcessClockIsTheSystems() {
        // The test process runs without TALLY_FAULT_CLOCK_FILE.
        #expect(ClockFault.process == nil)
        let before = Date().timeIntervalSince1970
        let now = EventTime.now().seconds
        #expect(abs(Double(now) - before) < 5)
    }
}
