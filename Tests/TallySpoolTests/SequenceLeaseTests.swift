import Foundation
import TallyCore
import Testing
@testable import TallySpool

/// The batch-sequence lease is spool metadata: a slot file beside the segments, written through
/// the spool's file-operations seam.
@Suite struct SequenceLeaseTests {
    func directory() -> TemporaryDirectory {
        let directory = TemporaryDirectory()
        try? FileManager.default.createDirectory(atPath: directory.spool, withIntermediateDirectories: true)
        return directory
    }

    @Test func sequenceLeaseIsDurableAndNeverReused() throws {
        let directory = directory()
        let ops = PosixFileOperations()
        var lease = SequenceLease(directory: directory.spool, ops: ops, spoolWasUsed: false, block: 8)
        var taken: [UInt64] = []
        for _ in 0..<10 { taken.append(try lease.take()) }
        #expect(taken == Array(1...10))
        lease.close()
        // A restart (the lease is lost with the process) starts above everything handed out.
        var again = SequenceLease(directory: directory.spool, ops: ops, spoolWasUsed: true, block: 8)
        #expect(again.recovered == nil)
        #expect(try again.take() > 10)
        again.close()
        let slot = SequenceLease.file.encode(SequenceLease.payload(12_345))
        #expect(SequenceLease.file.decode(slot[...]).map(SequenceLease.mark) == 12_345)
        var damaged = slot
        damaged[9] ^= 1
        #expect(SequenceLease.file.decode(damaged[...]) == nil)
    }

    /// Two slots written in place (no new space on a full disk): a torn newest slot leaves the
    /// previous mark, which covers everything handed out before it.
    @Test func sequenceLeaseUpdatesInPlaceAndSurvivesATornSlot() throws {
        let directory = directory()
        let path = directory.spool + "/" + SequenceLease.file.fileName
        let ops = TestFileOperations()
        var lease = SequenceLease(directory: directory.spool, ops: ops, spoolWasUsed: false, block: 4)
        for _ in 0..<9 { _ = try lease.take() }  // leases up to 5, 9, 13
        let inode = try FileManager.default.attributesOfItem(atPath: path)[.systemFileNumber] as? Int
        // A full disk: extending the lease overwrites a slot, so it still works.
        ops.diskFull = true
        for _ in 0..<8 { _ = try lease.take() }  // two more leases: 17, 21
        ops.diskFull = false
        lease.close()
        #expect(
            try FileManager.default.attributesOfItem(atPath: path)[.systemFileNumber] as? Int == inode, "the file was replaced, not updated in place")
        var bytes = readBytes(path)
        #expect(bytes.count == 2 * SequenceLease.file.slotBytes)
        #expect(SequenceFileState.inspect(spoolDirectory: directory.spool) == .valid(mark: 21))
        // Tear the newest slot: the other one (17) is what a restart reads.
        let newest = SequenceLease.file.decode(bytes[0..<20]).map(SequenceLease.mark) == 21 ? 0 : 20
        bytes[newest + 12] ^= 0xFF
        writeBytes(path, bytes)
        #expect(SequenceFileState.inspect(spoolDirectory: directory.spool) == .valid(mark: 17))
        // A 20-byte file (earlier versions) is slot 0 alone.
        writeBytes(path, SequenceLease.file.encode(SequenceLease.payload(99)))
        #expect(SequenceFileState.inspect(spoolDirectory: directory.spool) == .valid(mark: 99))
    }

    /// A lease that cannot be stored hands nothing out and changes nothing: the next take, once
    /// the disk works again, continues where it stood.
    @Test func aFailedLeaseHandsOutNothing() throws {
        let directory = directory()
        let ops = TestFileOperations()
        var lease = SequenceLease(directory: directory.spool, ops: ops, spoolWasUsed: false, block: 2)
        #expect(try lease.take() == 1)
        #expect(try lease.take() == 2)
        ops.state.withLock { $0.failSyncs = EIO }
        #expect(throws: SpoolError.self) { try lease.take() }
        ops.state.withLock { $0.failSyncs = nil }
        #expect(try lease.take() == 3)
    }

    /// A deleted or damaged `shipper.seq` beside a used spool never restarts at 1 (which the
    /// collector refuses as `sequence_reused`, stalling shipping): the lease continues from the
    /// clock, above anything used before, and says so.
    @Test func lostSequenceStoreContinuesFromTheClock() throws {
        let directory = directory()
        let ops = PosixFileOperations()
        let path = directory.spool + "/" + SequenceLease.file.fileName
        var fresh = SequenceLease(directory: directory.spool, ops: ops, spoolWasUsed: false, block: 8)
        #expect(try fresh.take() == 1)
        fresh.close()
        try FileManager.default.removeItem(atPath: path)
        #expect(SequenceFileState.inspect(spoolDirectory: directory.spool) == .missing)
        let before = UInt64(EventTime.now().microseconds)
        var deleted = SequenceLease(directory: directory.spool, ops: ops, spoolWasUsed: true, block: 8)
        #expect(deleted.recovered?.contains("missing") == true)
        #expect(try deleted.take() >= before)
        deleted.close()
        writeBytes(path, Array("not a sequence file at all".utf8))
        #expect(SequenceFileState.inspect(spoolDirectory: directory.spool) == .damaged)
        var damaged = SequenceLease(directory: directory.spool, ops: ops, spoolWasUsed: true, block: 8)
        #expect(damaged.recovered?.contains("damaged") == true)
        #expect(try damaged.take() >= before)
    }

    /// Through the spool: sequences survive a close and reopen, and a reopened used spool whose
    /// lease file is gone says so in its recovery report.
    @Test func theSpoolLeasesSequences() async throws {
        let directory = TemporaryDirectory()
        let spool = try await Spool.open(directory: directory.spool, options: options())
        try await spool.append([sampleEvent(1)])
        let first = try await spool.takeSequence()
        let second = try await spool.takeSequence()
        #expect(first == 1 && second == 2 && spool.recovery.sequenceRecovered == nil)
        await spool.close()
        let reopened = try await Spool.open(directory: directory.spool, options: options())
        #expect(try await reopened.takeSequence() > second)
        await reopened.close()
        try FileManager.default.removeItem(atPath: directory.spool + "/" + SequenceLease.file.fileName)
        let lost = try await Spool.open(directory: directory.spool, options: options())
        #expect(lost.recovery.sequenceRecovered?.contains("missing") == true)
        #expect(try await lost.takeSequence() > 1_000_000)
        await lost.close()
        let readOnly = try await Spool.open(directory: directory.spool, options: options { $0.access = .readOnly })
        await #expect(throws: SpoolError.readOnly) { try await readOnly.takeSequence() }
        await readOnly.close()
    }
}
