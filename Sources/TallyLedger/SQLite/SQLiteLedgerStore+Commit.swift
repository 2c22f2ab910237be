import CSQLite
import TallyCore

/// A batch's commit (see ``SQLiteLedgerStore``): the batch record checked, the raw rows, the
/// duplicates, the refusals, the unique values, the reconciliation counts and the logged
/// aggregate cells, as ``LedgerRules`` decides them, in one transaction, alone or with the
/// batches queued behind it.
extension SQLiteLedgerStore {
    /// Commits the open transaction; with the disk-full fault injected it fails first, as a full
    /// disk would, leaving the caller to roll back.
    func commitTransaction() throws(LedgerError) {
        if fault == .diskFull {
            throw LedgerError.database(code: SQLITE_FULL, message: "database or disk is full (injected)", context: "committing")
        }
        try statements.commit.run()
    }

    // MARK: - Commit

    public func commit(_ prepared: PreparedBatch) throws(LedgerError) -> BatchOutcome {
        let outcomes = try commitTogether([prepared])
        guard let outcome = outcomes.first else { throw .corruptRow("a commit of one batch answered none") }
        return outcome
    }

    /// Several batches in one transaction, with one fsync: what a collector's writer commits
    /// when batches queue up behind the one it is committing (`Ledger`). Each batch is written
    /// as ``commit(_:)-(PreparedBatch)`` writes it, in order, so a later batch sees the earlier
    /// ones (a resend in the same group gets the first copy's outcome). When any of them fails
    /// (a reused sequence, a sum out of range, the disk), the transaction is rolled back and each
    /// batch is committed alone, so that one batch's error is its own.
    ///
    /// The fsync of the log is the writer's longest wait: in `tally-bench agent`'s drain, the
    /// writer thread was blocked about a sixth of its time, one fsync per batch.
    public func commit(_ batches: [PreparedBatch]) -> [Result<BatchOutcome, LedgerError>] {
        if batches.count > 1, let outcomes = try? commitTogether(batches) { return outcomes.map { .success($0) } }
        return commitOneByOne(batches)
    }

    /// `batches` in one transaction, their outcomes in order (a batch seen before: its stored
    /// outcome). Throws when any of them fails, with the transaction rolled back.
    private func commitTogether(_ batches: [PreparedBatch]) throws(LedgerError) -> [BatchOutcome] {
        let boundBefore = loggedBound
        pendingLogged = nil
        pendingReconciliationRows.removeAll(keepingCapacity: true)
        var written: [(outcome: BatchOutcome, cells: Int, logged: LoggedRow?)] = []
        try statements.begin.run()
        do throws(LedgerError) {
            for prepared in batches {
                let batch = prepared.batch
                if let stored = try storedOutcome(agent: batch.agent, sequence: batch.sequence, digest: prepared.contentDigest) {
                    written.append((stored, 0, nil))
                    continue
                }
                let one = try write(prepared)
                // The next batch's overflow bound counts this one's cells.
                if one.cells > 0 { loggedBound = one.bound }
                written.append((one.outcome, one.cells, pendingLogged))
                pendingLogged = nil
            }
            if fault == .crashBeforeCommit {
                database.close()
                throw LedgerError.database(code: SQLITE_ABORT, message: "injected crash", context: "committing")
            }
            // The commit writes the transaction's pages to the WAL in the kernel, a few
            // milliseconds for a batch of thousands of events: a read waiting for this core
            // runs first.
            YieldPoint.between()
            try commitTransaction()
        } catch {
            if database.handle != nil { try? statements.rollback.run() }
            loggedBound = boundBefore
            pendingLogged = nil
            pendingReconciliationRows.removeAll(keepingCapacity: true)
            throw error
        }
        rememberReconciliationRows()
        for one in written where one.logged != nil {
            loggedRows += 1
            loggedCells += one.cells
            pendingLogged = one.logged
            mirrorCommittedLog()
        }
        if foldIsDue {
            // The batches are committed either way; a fold that fails is retried by the next
            // commit or read, and a read reports its error.
            try? flushAggregates()
        }
        return written.map(\.outcome)
    }

    /// The outcome recorded for (agent, sequence), or nil for a new batch. A recorded batch whose
    /// content differs is a reused sequence: refused, because answering with the old outcome would
    /// let the agent delete events that were never stored.
    func storedOutcome(agent: String, sequence: UInt64, digest: [UInt8]) throws(LedgerError) -> BatchOutcome? {
        let select = statements.selectBatch
        select.bind(1, agent)
        select.bind(2, Int64(bitPattern: sequence))
        defer { select.reset() }
        if try select.step() {
            guard select.blob(6) == digest else { throw .sequenceReused(agent: agent, sequence: sequence) }
            var outcome = BatchOutcome()
            outcome.accepted = Int(select.int64(0))
            outcome.duplicate = Int(select.int64(1))
            outcome.late = Int(select.int64(2))
            outcome.adjusted = Int(select.int64(3))
            outcome.rejected = Int(select.int64(4))
            outcome.rejections = try Self.decodeRejections(select.text(5))
            return outcome
        }
        select.reset()
        let pruned = statements.selectPruned
        pruned.bind(1, agent)
        defer { pruned.reset() }
        if try pruned.step(), UInt64(bitPattern: pruned.int64(0)) >= sequence {
            throw .batchExpired(agent: agent, sequence: sequence)
        }
        return nil
    }

    /// Writes every row of a new batch inside the open transaction: what ``LedgerRules`` decides.
    /// The candidate raw rows are inserted first (`INSERT OR IGNORE`): whether each one was new is
    /// the store's answer that completes the plan.
    func write(_ prepared: PreparedBatch) throws(LedgerError) -> (outcome: BatchOutcome, bound: Int128, cells: Int) {
        let batch = prepared.batch
        let speculation = prepared.speculation.flatMap { $0.applies(to: configuration) ? $0 : nil }
        let classification = speculation?.classification ?? LedgerRules.classify(prepared, window: configuration.lateWindow)
        for refusal in classification.refusals {
            try insertRefused(
                batch, index: refusal.index, invalid: refusal.invalid, event: classification.event(refusal.index),
                fingerprint: refusal.fingerprint)
        }
        var existing: [Bool] = []
        existing.reserveCapacity(classification.candidates.count)
        let events = batch.events
        for (step, candidate) in classification.candidates.enumerated() {
            YieldPoint.after(step: step, every: 64)
            // The event read in place: `classification.event(_:)` returns a copy, whose retains
            // and releases of the event's strings and properties were 5% of the writer's time.
            guard case .valid(let event) = events[candidate.index] else { continue }
            existing.append(
                try !insertRaw(
                    prepared, index: candidate.index, event: event, fingerprint: candidate.fingerprint, status: candidate.status,
                    billedIn: candidate.billedIn))
        }
        YieldPoint.between()
        var plan = try configuration.plan(classification, existing: existing, speculation: speculation)
        YieldPoint.between()
        if !plan.levels.isEmpty { try writeLevels(&plan) }
        for duplicate in plan.duplicates {
            guard let event = classification.event(duplicate.index) else { continue }
            try insertDuplicate(batch, index: duplicate.index, event: event, fingerprint: duplicate.fingerprint)
        }
        // The counts go to the log with the cells, summed into `reconciliation` by the fold; the
        // table gets only the zero row of a (period, tenant, agent) it lacks.
        try insertReconciliationRows(agent: batch.agent, plan.reconciliation)
        let bound = try log(
            plan.cells, encoded: speculation?.encodedCells(existing: existing, cells: plan.cells),
            counts: plan.reconciliation.isEmpty ? nil : ReconciliationLogCodec.encode(agent: batch.agent, plan.reconciliation))
        let insertUnique = statements.insertUnique
        for unique in plan.uniqueValues {
            insertUnique.bind(1, unique.tenant)
            insertUnique.bind(2, unique.metric)
            insertUnique.bind(3, unique.property)
            insertUnique.bind(4, unique.period.description)
            insertUnique.bind(5, unique.value)
            insertUnique.bind(6, unique.billedIn.description)
            try insertUnique.run()
        }
        let outcome = plan.outcome
        let insertBatch = statements.insertBatch
        insertBatch.bind(1, batch.agent)
        insertBatch.bind(2, Int64(bitPattern: batch.sequence))
        insertBatch.bind(3, batch.receivedAt.microseconds)
        insertBatch.bind(4, outcome.accepted)
        insertBatch.bind(5, outcome.duplicate)
        insertBatch.bind(6, outcome.late)
        insertBatch.bind(7, outcome.adjusted)
        insertBatch.bind(8, outcome.rejected)
        insertBatch.bind(9, Self.encodeRejections(outcome.rejections))
        insertBatch.bind(10, blob: prepared.contentDigest)
        try insertBatch.run()
        return (outcome, bound, plan.cells.count)
    }

    /// The zero `reconciliation` row of each (period, tenant, agent) of `deltas` that the table
    /// is not known to have: one index probe per new row, none for the rest.
    func insertReconciliationRows(agent: String, _ deltas: [LedgerPlan.ReconciliationDelta]) throws(LedgerError) {
        let insert = statements.insertReconciliationRow
        for delta in deltas {
            let key = ReconciliationRowKey(period: delta.period, tenant: delta.tenant, agent: agent)
            guard !knownReconciliationRows.contains(key) else { continue }
            insert.bind(1, delta.period.description)
            insert.bind(2, delta.tenant)
            insert.bind(3, agent)
            try insert.run()
            pendingReconciliationRows.append(key)
        }
    }

    /// After a commit: the rows its transaction inserted are known. The set is bounded: past
    /// ``knownReconciliationLimit`` rows it starts over, which costs only probes again.
    func rememberReconciliationRows() {
        if knownReconciliationRows.count + pendingReconciliationRows.count > Self.knownReconciliationLimit {
            knownReconciliationRows.removeAll()
        }
        knownReconciliationRows.formUnion(pendingReconciliationRows)
        pendingReconciliationRows.removeAll(keepingCapacity: true)
    }

    /// Inserts a raw event; false when an event with the same (timestamp, fingerprint) exists.
    func insertRaw(
        _ prepared: PreparedBatch, index: Int, event: UsageEvent, fingerprint: Fingerprint, status: EventStatus,
        billedIn: BillingPeriod?
    ) throws(LedgerError) -> Bool {
        let batch = prepared.batch
        let insert = statements.insertRaw
        insert.bind(1, event.timestamp.microseconds)
        insert.bind(2, fingerprint: fingerprint)
        rawArguments.text(3, event.tenant)
        rawArguments.text(4, event.metric)
        rawArguments.text(5, prepared.quantities[index])
        if let id = event.id { rawArguments.text(6, id) } else { insert.bindNull(6) }
        rawArguments.blob(7, prepared.properties(index))
        rawArguments.text(8, status.rawValue)
        if let billedIn { rawArguments.text(9, billedIn.description) } else { insert.bindNull(9) }
        rawArguments.text(10, batch.agent)
        insert.bind(11, Int64(bitPattern: batch.sequence))
        insert.bind(12, index)
        insert.bind(13, batch.receivedAt.microseconds)
        try insert.run(binding: &rawArguments)
        return database.changes == 1
    }

    func insertDuplicate(_ batch: IncomingBatch, index: Int, event: UsageEvent, fingerprint: Fingerprint) throws(LedgerError) {
        let insert = statements.insertDuplicate
        insert.bind(1, batch.agent)
        insert.bind(2, Int64(bitPattern: batch.sequence))
        insert.bind(3, index)
        insert.bind(4, event.timestamp.microseconds)
        insert.bind(5, fingerprint: fingerprint)
        insert.bind(6, event.tenant)
        insert.bind(7, event.metric)
        insert.bind(8, event.quantity.description)
        insert.bind(9, batch.receivedAt.microseconds)
        try insert.run()
    }

    func insertRefused(
        _ batch: IncomingBatch, index: Int, invalid: InvalidEvent, event: UsageEvent? = nil, fingerprint: Fingerprint? = nil
    ) throws(LedgerError) {
        let insert = statements.insertRefused
        insert.bind(1, batch.agent)
        insert.bind(2, Int64(bitPattern: batch.sequence))
        insert.bind(3, index)
        insert.bind(4, invalid.rejection.reason.rawValue)
        insert.bind(5, invalid.rejection.field)
        insert.bind(6, invalid.rejection.message)
        insert.bind(7, event?.tenant ?? invalid.tenant)
        insert.bind(8, event?.metric ?? invalid.metric)
        if let time = event?.timestamp ?? invalid.timestamp { insert.bind(9, time.microseconds) } else { insert.bindNull(9) }
        if let fingerprint { insert.bind(10, fingerprint: fingerprint) } else { insert.bindNull(10) }
        insert.bind(11, event?.quantity.description)
        insert.bind(12, event?.id ?? invalid.id)
        if let event { insert.bind(13, blob: PropertiesCodec.encode(event.properties)) } else { insert.bindNull(13) }
        insert.bind(14, invalid.source)
        insert.bind(15, batch.receivedAt.microseconds)
        try insert.run()
    }

    static func encodeRejections(_ rejections: [BatchOutcome.Rejection]) -> String {
        rejections.map { "\($0.index):\($0.reason.rawValue)" }.joined(separator: ",")
    }

    static func decodeRejections(_ text: String) throws(LedgerError) -> [BatchOutcome.Rejection] {
        guard !text.isEmpty else { return [] }
        var result: [BatchOutcome.Rejection] = []
        for item in text.split(separator: ",") {
            let parts = item.split(separator: ":", maxSplits: 1)
            guard parts.count == 2, let index = Int(parts[0]), let reason = RejectionReason(rawValue: String(parts[1])) else {
                throw .corruptRow("batch rejections '\(text)'")
            }
            result.append(.init(index: index, reason: reason))
        }
        return result
    }
}

/// A (period, tenant, agent) row of the `reconciliation` table, as the writer remembers it: its
/// period kept as a ``BillingPeriod`` (``ReconciliationLogCodec/Key`` holds the text), so that
/// checking a batch's rows makes no string.
struct ReconciliationRowKey: Hashable {
    var period: BillingPeriod
    var tenant: String
    var agent: String
}
