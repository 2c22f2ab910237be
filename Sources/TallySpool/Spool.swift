public import TallyCore

/// The agent's durable spool: append-only segment files of CRC-checked event records.
///
/// Guarantees:
/// - `append` returns only once its events are durable per the fsync policy (after the fsync
///   that covers them for `always` and `interval`; after write(2) for `never`). If it throws,
///   the caller must treat the events as not accepted (some may still be shipped; the collector
///   dedupes a retry).
/// - Events are read back whole and in append order; data is deleted only by `acknowledge`.
/// - Opening never crashes on damaged files: torn tails are truncated, corrupt records are
///   quarantined and skipped (see FORMAT.md), and every repair is in ``recovery``.
/// - One exclusive opener per directory (an flock on `LOCK`, released by the kernel when the
///   process dies); read-only openers take no lock and change nothing.
/// - All file I/O runs on one dedicated thread; no Swift concurrency thread waits on the disk.
public final class Spool: Sendable {
    public let directory: String
    public let options: SpoolOptions
    /// What opening found and repaired.
    public let recovery: RecoveryReport
    private let thread: SpoolIOThread

    private init(directory: String, options: SpoolOptions, recovery: RecoveryReport, thread: SpoolIOThread) {
        self.directory = directory
        self.options = options
        self.recovery = recovery
        self.thread = thread
    }

    /// Opens (creating if needed, unless read-only) the spool in `directory` and recovers it.
    /// Throws ``SpoolError/locked(directory:)`` when another exclusive opener still holds it
    /// after ``SpoolOptions/lockWait``.
    public static func open(
        directory: String, options: SpoolOptions = SpoolOptions(),
        fileOperations: any SpoolFileOperations = PosixFileOperations()
    ) async throws(SpoolError) -> Spool {
        // Recovery runs on the I/O thread, before it serves any job.
        let thread = SpoolIOThread(policy: options.fsync)
        let result: Result<RecoveryReport, SpoolError> = await withCheckedContinuation { continuation in
            thread.start(
                opening: { () throws(SpoolError) -> SpoolStore in
                    try SpoolStore(directory: directory, options: options, ops: fileOperations)
                },
                opened: { continuation.resume(returning: $0) })
        }
        let recovery = try result.get()
        return Spool(directory: directory, options: options, recovery: recovery, thread: thread)
    }

    /// Appends `events` in order; returns the position after the last one once they are durable
    /// per the fsync policy. Throws ``SpoolError/full(retryAfter:)`` or
    /// ``SpoolError/rejectedFull`` when the spool (or the disk) is full: then nothing was kept.
    @discardableResult
    public func append(_ events: [UsageEvent]) async throws(SpoolError) -> SpoolPosition {
        let result: Result<SpoolPosition, SpoolError> = await withCheckedContinuation { continuation in
            append(events) { continuation.resume(returning: $0) }
        }
        return try result.get()
    }

    /// ``append(_:)-([UsageEvent])`` for records already encoded.
    @discardableResult
    public func append(_ batch: EncodedBatch) async throws(SpoolError) -> SpoolPosition {
        let result: Result<SpoolPosition, SpoolError> = await withCheckedContinuation { continuation in
            append(batch) { continuation.resume(returning: $0) }
        }
        return try result.get()
    }

    /// ``append(_:)`` for a caller that answers someone waiting (an HTTP request), told as early as
    /// it knows (when the request's head is read) by ``arrival()``: with an `interval` fsync
    /// policy, the spool syncs at once when every waiting caller's append is written and no
    /// other arrival is on its way, instead of waiting out the window (see ``FsyncPolicy``).
    /// The arrival ends here.
    @discardableResult
    public func append(_ events: [UsageEvent], arrival: SpoolArrival) async throws(SpoolError) -> SpoolPosition {
        let batch: EncodedBatch
        do throws(SpoolError) {
            batch = try EncodedBatch(events)
        } catch {
            arrival.end()
            throw error
        }
        return try await append(batch, arrival: arrival)
    }

    /// ``append(_:arrival:)-([UsageEvent],_)`` for records already encoded.
    @discardableResult
    public func append(_ batch: EncodedBatch, arrival: SpoolArrival) async throws(SpoolError) -> SpoolPosition {
        let result: Result<SpoolPosition, SpoolError> = await withCheckedContinuation { continuation in
            let completion: SpoolIOThread.Completion = { continuation.resume(returning: $0) }
            if !thread.submit(.append(batch, completion, awaited: true), ending: arrival) {
                continuation.resume(returning: .failure(.closed))
            }
        }
        return try result.get()
    }

    /// Announces an awaited append on its way (see ``append(_:arrival:)``). End it with
    /// ``SpoolArrival/end()`` when the request turns out to append nothing; an arrival dropped
    /// without either ends itself.
    public func arrival() -> SpoolArrival {
        let arrival = SpoolArrival(thread: thread)
        thread.arrive(arrival)
        return arrival
    }

    /// ``append(_:)`` for a caller that must not wait: the events are queued for the I/O thread
    /// before this returns (so appends made one after another keep their order in the spool),
    /// and `completion` runs once they are durable per the fsync policy, or with the error (then
    /// nothing was kept). `completion` runs on the spool's I/O thread: it must be quick.
    public func append(_ events: [UsageEvent], completion: @escaping @Sendable (Result<SpoolPosition, SpoolError>) -> Void) {
        let batch: EncodedBatch
        do throws(SpoolError) {
            batch = try EncodedBatch(events)
        } catch {
            completion(.failure(error))
            return
        }
        append(batch, completion: completion)
    }

    /// ``append(_:completion:)-([UsageEvent],_)`` for records already encoded.
    public func append(_ batch: EncodedBatch, completion: @escaping @Sendable (Result<SpoolPosition, SpoolError>) -> Void) {
        if !thread.submit(.append(batch, completion, awaited: false)) { completion(.failure(.closed)) }
    }

    /// Reads events from `position` on (from the acknowledged position when `position` is
    /// before it), oldest first: at most `maxEvents`, and about `maxBytes` of records (always at
    /// least one event when there is one). Continue with the batch's `end`.
    /// With `includingAcknowledged`, acknowledged events still on disk (before the checkpoint in
    /// the oldest segment) are read too; a shipper never wants them, an export may.
    public func read(
        from position: SpoolPosition, maxEvents: Int = 1_000, maxBytes: Int = 1 << 20, includingAcknowledged: Bool = false
    ) async throws(SpoolError) -> SpoolBatch {
        try await perform { store throws(SpoolError) in
            try store.read(from: position, maxEvents: max(1, maxEvents), maxBytes: max(1, maxBytes), includingAcknowledged: includingAcknowledged)
        }
    }

    /// ``read(from:maxEvents:maxBytes:includingAcknowledged:)`` with the events as
    /// ``EventSpans``, checked as that read checks them: what a shipper encodes.
    public func readSpans(from position: SpoolPosition, maxEvents: Int = 1_000, maxBytes: Int = 1 << 20) async throws(SpoolError) -> SpoolSpansBatch {
        try await perform { store throws(SpoolError) in
            try store.read(SpoolSpansBatch.self, from: position, maxEvents: max(1, maxEvents), maxBytes: max(1, maxBytes))
        }
    }

    /// Reads from the acknowledged position (where a shipper starts after a restart).
    public func readFromAcknowledged(maxEvents: Int = 1_000, maxBytes: Int = 1 << 20) async throws(SpoolError) -> SpoolBatch {
        try await read(from: SpoolPosition(segment: 0, offset: 0), maxEvents: maxEvents, maxBytes: maxBytes)
    }

    /// Marks everything before `position` as acknowledged by the collector: the checkpoint is
    /// replaced atomically, then segments wholly before it are deleted. Never frees anything at
    /// or after `position`.
    public func acknowledge(upTo position: SpoolPosition) async throws(SpoolError) {
        try await perform { store throws(SpoolError) in try store.acknowledge(upTo: position) }
    }

    /// Records batches the collector acknowledged (``AcknowledgedBatch``), for `tallyctl spool
    /// inspect --id`; best effort: a failure loses the record and nothing else.
    public func recordAcknowledged(_ batches: [AcknowledgedBatch]) async throws(SpoolError) {
        try await perform { store throws(SpoolError) in try store.recordAcknowledged(batches) }
    }

    /// The acknowledged batches recorded (oldest first) whose data may still be on disk.
    public func acknowledgedBatches() async throws(SpoolError) -> [AcknowledgedBatch] {
        try await perform { store throws(SpoolError) in try store.acknowledgedBatches() }
    }

    /// The next batch sequence, durably leased (``SequenceLease``): never handed out twice, even
    /// across a crash. On failure nothing is handed out; retry later.
    public func takeSequence() async throws(SpoolError) -> UInt64 {
        try await perform { store throws(SpoolError) in try store.takeSequence() }
    }

    public func stats() async throws(SpoolError) -> SpoolStats {
        try await perform { store in store.stats() }
    }

    /// Walks and decodes every record, reporting corrupt ones by segment and offset; changes nothing.
    public func verify() async throws(SpoolError) -> SpoolVerification {
        try await perform { store throws(SpoolError) in try store.verify() }
    }

    /// The regions in the quarantine file, each with up to `maxBytesPerRegion` of its bytes.
    public func quarantined(maxBytesPerRegion: Int = 1 << 20) async throws(SpoolError) -> [QuarantinedRegion] {
        try await perform { store throws(SpoolError) in try store.quarantined(maxBytesPerRegion: maxBytesPerRegion) }
    }

    /// Calls `observer` with the duration (nanoseconds) of every data fsync from now on, on the
    /// spool's I/O thread: keep it cheap.
    public func observeSyncs(_ observer: @escaping @Sendable (_ nanoseconds: Int64) -> Void) async throws(SpoolError) {
        try await perform { store in store.syncObserver = observer }
    }

    /// Finishes queued appends, fsyncs, closes the files and releases the lock. Later calls fail
    /// with ``SpoolError/closed``.
    public func close() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            thread.stop { continuation.resume() }
        }
    }

    private func perform<T: Sendable>(_ body: @escaping @Sendable (SpoolStore) throws(SpoolError) -> T) async throws(SpoolError) -> T {
        let result: Result<T, SpoolError> = await withCheckedContinuation { continuation in
            let submitted = thread.submit(
                .task { store in
                    do throws(SpoolError) {
                        continuation.resume(returning: .success(try body(store)))
                    } catch {
                        continuation.resume(returning: .failure(error))
                    }
                })
            if !submitted { continuation.resume(returning: .failure(.closed)) }
        }
        return try result.get()
    }
}

/// An awaited append on its way to the spool: a request read whose events are not yet appended
/// (``Spool/arrival()``). While any is on its way, the group commit keeps waiting for it.
public final class SpoolArrival: @unchecked Sendable {
    private let thread: SpoolIOThread
    /// Whether the spool counts this arrival; guarded by the I/O thread's mutex.
    var counted = false

    init(thread: SpoolIOThread) { self.thread = thread }

    /// Nothing will be appended for this arrival (or it was, elsewhere). Idempotent.
    public func end() { thread.end(self) }

    deinit { thread.end(self) }
}
