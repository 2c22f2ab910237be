#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import TallyCore

/// The spool's files and their bookkeeping, used from one thread at a time (the I/O thread, or
/// the opener before the thread starts). Every method is synchronous and may block on disk.
final class SpoolStore {
    static let lockName = "LOCK"
    static let headerEnd = Int64(RecordFraming.segmentHeaderBytes)

    let directory: String
    let ops: any SpoolFileOperations
    let options: SpoolOptions
    var readOnly: Bool { options.access == .readOnly }
    var lockFd: Int32?
    var segments: [SegmentInfo] = []
    var activeFd: Int32?
    var checkpoint: SpoolPosition
    var checkpointFile: CheckpointFile?
    /// The batch-sequence lease; nil on a read-only open.
    var sequenceLease: SequenceLease?
    /// The id of the segment to create when there is no active one (its creation failed, e.g.
    /// on a full disk, after the fully acknowledged active segment was retired).
    var nextSegmentID: UInt64?
    /// The last write that failed for lack of space (or another I/O error), until a write succeeds.
    var writeFailure: SpoolError?
    var ackedRecordsInHead = 0
    let quarantine: QuarantineFile
    var report = RecoveryReport()
    var readerFd: (segment: UInt64, fd: Int32)?
    var spans: [(segment: UInt64, from: Int64, to: Int64, records: Int)] = []
    /// Set when unsynced records were truncated away (a failed fsync): their appends must fail.
    var lostUnsynced = false
    /// Told the duration of every group-commit fsync, in nanoseconds (the agent's histogram).
    var syncObserver: (@Sendable (Int64) -> Void)?

    static func segmentName(_ id: UInt64) -> String {
        let digits = String(id)
        return "segment-" + String(repeating: "0", count: max(0, 20 - digits.count)) + digits + ".tsp"
    }

    static func segmentID(fromName name: String) -> UInt64? {
        guard name.hasPrefix("segment-"), name.hasSuffix(".tsp"), name.utf8.count == 32 else { return nil }
        return UInt64(name.dropFirst(8).dropLast(4))
    }

    func path(_ id: UInt64) -> String { directory + "/" + Self.segmentName(id) }

    /// Takes the exclusive lock, trying again until `wait` has passed while someone else holds
    /// it. A holder that is about to let go is common: the previous agent still exiting, or a
    /// child process that another thread of this process is starting. Such a child holds a copy
    /// of every descriptor from its fork until its exec closes them (`O_CLOEXEC` acts only at
    /// the exec), this lock's among them, so a close and a reopen in quick succession can find
    /// the lock still held for a moment. An agent that really runs holds it for the whole wait.
    private static func lock(_ fd: Int32, path: String, waitingUpTo wait: Duration, ops: any SpoolFileOperations) throws(SpoolError) -> Bool {
        let clock = ContinuousClock()
        let deadline = clock.now + wait
        var pause = Duration.milliseconds(1)
        while true {
            if try ops.lock(fd, path: path) { return true }
            let now = clock.now
            if now >= deadline { return false }
            // On the spool's own I/O thread, never a Swift concurrency thread: it may block. A
            // signal that ends the nap early only brings the next try sooner.
            let (seconds, attoseconds) = min(pause, deadline - now).components
            usleep(UInt32(seconds * 1_000_000 + attoseconds / 1_000_000_000_000))
            pause = min(pause * 2, .milliseconds(50))
        }
    }

    /// Opens the spool: locks it, reads the checkpoint and recovers every segment (see FORMAT.md).
    init(directory: String, options: SpoolOptions, ops: any SpoolFileOperations) throws(SpoolError) {
        self.directory = directory
        self.options = options
        self.ops = ops
        let readOnly = options.access == .readOnly
        if !readOnly {
            try ops.makeDirectory(directory)
            let lockPath = directory + "/" + Self.lockName
            let fd = try ops.open(lockPath, create: true, readOnly: false)
            do throws(SpoolError) {
                guard try Self.lock(fd, path: lockPath, waitingUpTo: options.lockWait, ops: ops) else {
                    throw .locked(directory: directory)
                }
            } catch {
                ops.close(fd)
                throw error
            }
            lockFd = fd
        }
        do {
            quarantine = try QuarantineFile(directory: directory, ops: ops, readOnly: readOnly)
        } catch {
            if let lockFd { ops.close(lockFd) }
            throw error
        }
        checkpoint = SpoolPosition(segment: 0, offset: UInt64(Self.headerEnd))
        do {
            let names = try ops.list(directory)
            let storedFile = Checkpoint.read(directory: directory, ops: ops)
            let plan = RecoveryPlan(
                names: names, stored: storedFile.newest?.position, checkpointFileExists: storedFile.exists,
                temporaryNames: [Checkpoint.temporaryName, SequenceLease.file.temporaryName])
            if !readOnly { checkpointFile = CheckpointFile(directory: directory, ops: ops, stored: storedFile) }
            try carryOut(plan)
            if segments.isEmpty, !readOnly {
                let id = plan.freshSegment
                do {
                    try createSegment(id)
                } catch  where error.isOutOfSpace {
                    // Start anyway on a full disk: the first append creates it once there is room.
                    nextSegmentID = id
                    writeFailure = error
                }
            }
            let settled = plan.settle(segments: segments.map { ($0.id, $0.size) })
            if settled.movedToAnotherSegment { ackedRecordsInHead = 0 }
            if let past = settled.pastSegmentEnd { report.problems.append(SpoolCorruption(kind: .badCheckpoint, position: past, length: 0)) }
            checkpoint = settled.checkpoint
            report.missingSegments.sort()
            if !readOnly, report.problems.contains(where: { $0.kind == .tornTail }) || report.emptySegmentsRepaired > 0 || report.summariesWritten > 0
            {
                try SlotFile.syncDirectory(directory, ops: ops)
            }
            if !readOnly {
                // Created once, or repaired when no slot is valid (then counted as a problem above).
                if !report.checkpointFound { try? checkpointFile?.write(checkpoint) }
                // Acknowledged data left in the active segment (an earlier version kept it for
                // ever): free it now.
                try? retireAcknowledgedActive(always: true)
                let lease = SequenceLease(
                    directory: directory, ops: ops,
                    spoolWasUsed: report.checkpointFound || report.recordsFound > 0 || !report.problems.isEmpty)
                report.sequenceRecovered = lease.recovered
                sequenceLease = lease
            }
        } catch {
            close()
            throw error
        }
    }

    /// Syncs what is unsynced, closes every file and releases the lock.
    func close() {
        if !readOnly { try? sync() }
        if let activeFd { ops.close(activeFd) }
        activeFd = nil
        if let readerFd { ops.close(readerFd.fd) }
        readerFd = nil
        checkpointFile?.close()
        sequenceLease?.close()
        quarantine.close()
        if let lockFd { ops.close(lockFd) }
        lockFd = nil
    }
}
