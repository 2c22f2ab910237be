import Foundation
import Testing

/// A collector started on a ledger directory it cannot write exits 1 with one line on stderr
/// that names the path and the problem (it used to say only "unable to open database file", or
/// start and fail at the first commit).
@Suite struct LedgerDirectoryTests {
    @Test func aReadOnlyLedgerDirectoryIsNamedAndRefused() async throws {
        let directory = try ServiceProcess.temporaryDirectory()
        defer {
            try? FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: directory.path)
            try? FileManager.default.removeItem(at: directory)
        }
        let ledgerDirectory = directory.appendingPathComponent("ledger")
        try FileManager.default.createDirectory(at: ledgerDirectory, withIntermediateDirectories: true)
        // Readable and searchable by everyone, writable by no one but root.
        try FileManager.default.setAttributes([.posixPermissions: 0o555], ofItemAtPath: ledgerDirectory.path)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: directory.path)

        // As an ordinary user (root writes through any mode bits).
        let outcome = try await BinaryRunner.run(
            "tally-collector", ["--store", "sqlite:\(ledgerDirectory.path)/ledger.db", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"],
            unprivileged: true)
        #expect(outcome.status == 1, "stderr: \(outcome.stderr)")
        let lines = outcome.stderr.split(separator: "\n").filter { !$0.isEmpty }
        // The log may say it is starting; the last line is the reason.
        let reason = String(lines.last ?? "")
        #expect(reason.hasPrefix("tally-collector: "), "stderr: \(outcome.stderr)")
        #expect(reason.contains(ledgerDirectory.path), "stderr: \(outcome.stderr)")
        #expect(reason.contains("not writable") && reason.contains("Permission denied"), "stderr: \(outcome.stderr)")
    }
}
