public import ArgumentParser
import Foundation
import TallyCollector
import TallyCore
import TallyLedger
import TallyPricing
import TallyService

/// `tallyctl backfill`: imports historical NDJSON (an API gateway's logs, an old spool export)
/// as an explicit, audited backfill, and reverts one as a unit.
public struct BackfillCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "backfill",
        abstract: "Import historical events (NDJSON) as an audited backfill; list and revert backfills.",
        subcommands: [BackfillImport.self, BackfillRevert.self, BackfillList.self],
        defaultSubcommand: BackfillImport.self)
    public init() {}
}

/// Where a backfill writes: the ledger and how it is aggregated.
struct BackfillLedgerOptions: ParsableArguments {
    @Option(help: "The ledger: sqlite:PATH or postgres://USER@HOST:PORT/DATABASE.") var store = "sqlite:./tally-data/ledger.db"
    @Option(help: "The collector's pricing YAML file (the properties it aggregates by); default: those of the stored cells.")
    var pricing: String?
    /// The grace window the import classifies with (the import's `--grace`; the collector's default otherwise).
    var grace: Duration = LateWindow.standard.grace

    func validate() throws {
        do { _ = try StoreAddress(parsing: store) } catch { throw ValidationError("--store: \(error)") }
    }

    /// The ledger, aggregated as the collector aggregates it, without the late-arrival limit:
    /// a backfill's old events are its point.
    func open() async throws -> Ledger {
        var configuration: LedgerConfiguration
        if let pricing {
            configuration = AggregatePricing.ledgerConfiguration(for: try PricingConfigLoader.load(file: pricing))
        } else {
            configuration = try await storedDimensions(store)
        }
        // Raw events are the dedupe index and are kept forever, so a backfill of any age is
        // deduplicated exactly; this process never prunes batch records (the horizon's use).
        configuration.lateWindow.lateArrivalLimit = .seconds(Int64(200 * 366 * 86_400))
        configuration.dedupeHorizon = configuration.lateWindow.lateArrivalLimit
        configuration.lateWindow.policy = .adjust
        configuration.lateWindow.grace = grace
        return try openLedger(store, configuration: configuration)
    }
}

/// The operating-system user running `tallyctl`, for the audit trail.
func operatingSystemUser() -> String {
    let environment = ProcessInfo.processInfo.environment
    return "tallyctl:" + (environment["USER"] ?? environment["LOGNAME"] ?? "uid-\(getuid())")
}

struct BackfillImport: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import",
        abstract: "Import a file of NDJSON events (the default subcommand: `tallyctl backfill FILE --reason ...`).",
        discussion: """
            Each line is an event as the agent takes it. The events are deduplicated against the ledger like any \
            others (a line already billed is a duplicate), refused for the same reasons (invalid, from the future) \
            but never as too old; events of closed periods are billed as adjustments on the next open invoice. \
            The backfill's id (default: from the file's SHA-256) makes a rerun resume where it stopped: batches \
            already committed are not written twice. Prints a summary that reconciles: \
            lines = accepted + duplicate + late + rejected.
            """)
    @OptionGroup var global: GlobalOptions
    @OptionGroup var ledger: BackfillLedgerOptions
    @Argument(help: "The NDJSON file.") var file: String
    @Option(help: "Why: kept with the backfill.") var reason: String
    @Option(help: "The backfill's id (default: the first 12 hex digits of the file's SHA-256).") var id: String?
    @Option(help: "The metric of lines that name none (as the agent's --default-metric).") var defaultMetric: String?
    @Option(help: "The collector's grace window (its `late.grace`): when a period closes and its events become adjustments.")
    var grace = "72h"
    public init() {}

    /// Bytes read at a time: 4 MiB, or (test-only) `TALLY_BACKFILL_READ_BYTES`, so that a test
    /// can split lines across reads.
    static let readBytes: Int = ProcessInfo.processInfo.environment["TALLY_BACKFILL_READ_BYTES"].flatMap { Int($0) }.map { max(1, $0) } ?? 4 << 20

    func validate() throws {
        try ledger.validate()
        guard !reason.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else { throw ValidationError("--reason must say why") }
        if let id, id.isEmpty || id.utf8.count > 64 || id.contains(where: { $0.isWhitespace }) {
            throw ValidationError("--id must be 1 to 64 bytes without spaces")
        }
        do { _ = try DurationText.parse(grace) } catch { throw ValidationError("--grace: \(error)") }
    }

    func run() async throws {
        guard let input = FileHandle(forReadingAtPath: file) else { throw RuntimeFailure("cannot read \(file)") }
        defer { try? input.close() }
        let size = (try? FileManager.default.attributesOfItem(atPath: file)[.size] as? Int) ?? 0
        // The file is read in chunks, never whole: a gateway's log can be many gigabytes.
        func chunks(_ body: ([UInt8]) async throws -> Void) async throws {
            try input.seek(toOffset: 0)
            while let data = try input.read(upToCount: Self.readBytes), !data.isEmpty { try await body([UInt8](data)) }
        }
        var identifier = id ?? ""
        if id == nil {
            let hasher = SHA256Digest.Incremental()
            try await chunks { bytes in bytes.withUnsafeBytes { hasher.update($0) } }
            identifier = String(Hex.encode(hasher.finish()).prefix(12))
        }
        var options = ledger
        options.grace = try DurationText.parse(grace)
        let writer = try await options.open()
        defer { Task { await writer.shutdown() } }
        let now = EventTime.now()
        let backfillID = identifier
        var record =
            try await writer.perform { store throws(LedgerError) in try store.backfills().first { $0.id == backfillID } }
            ?? BackfillRecord(id: identifier, reason: reason, actor: operatingSystemUser(), source: file, startedAt: now)
        if let reverted = record.revertedAt {
            throw RuntimeFailure("backfill \(identifier) was reverted at \(reverted); import the file under another --id")
        }
        record.counts = ReconciliationCounts()
        record.finished = false
        let decoder = EventDecoder(defaultMetric: defaultMetric)
        let progress = Progress(total: size)
        let batchSize = 1_000
        var sequence: UInt64 = 0
        var pending: [IncomingEvent] = []
        var partial: [UInt8] = []
        var consumed = 0
        var linesRead = 0
        func commit() async throws {
            guard !pending.isEmpty else { return }
            sequence += 1
            let batch = IncomingBatch(agent: record.agent, sequence: sequence, receivedAt: now, events: pending)
            let outcome: BatchOutcome
            do { outcome = try await writer.commit(batch) } catch {
                throw RuntimeFailure("backfill \(backfillID) stopped after \(linesRead - pending.count) lines: \(error); run it again to resume")
            }
            record.counts.received += Int64(pending.count)
            record.counts.accepted += Int64(outcome.accepted)
            record.counts.duplicate += Int64(outcome.duplicate)
            record.counts.late += Int64(outcome.late)
            record.counts.adjusted += Int64(outcome.adjusted)
            record.counts.rejected += Int64(outcome.rejected)
            let saved = record
            try await writer.perform { store throws(LedgerError) in try store.saveBackfill(saved) }
            pending.removeAll(keepingCapacity: true)
        }
        func take(_ line: ArraySlice<UInt8>) async throws {
            var line = line
            if line.last == 0x0D { line = line.dropLast() }
            guard !line.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) else { return }
            linesRead += 1
            let decoded = Array(line).withUnsafeBufferPointer { decoder.decodeLine($0, now: now) }
            switch decoded {
            case .success(let event): pending.append(.valid(event))
            case .failure(let rejection):
                pending.append(.invalid(InvalidEvent(rejection, source: String(decoding: line.prefix(4096), as: UTF8.self))))
            }
            if pending.count == batchSize { try await commit() }
        }
        try await chunks { bytes in
            var start = 0
            for index in bytes.indices where bytes[index] == 0x0A {
                if partial.isEmpty {
                    try await take(bytes[start..<index])
                } else {
                    partial.append(contentsOf: bytes[start..<index])
                    try await take(partial[...])
                    partial.removeAll(keepingCapacity: true)
                }
                start = index + 1
            }
            partial.append(contentsOf: bytes[start...])
            consumed += bytes.count
            progress.advance(to: consumed)
        }
        if !partial.isEmpty { try await take(partial[...]) }
        try await commit()
        record.finished = true
        let finished = record
        try await writer.perform { store throws(LedgerError) in try store.saveBackfill(finished) }
        progress.finish()
        let adjustedInto = record.counts.adjusted > 0 ? " on the \(LateWindow(grace: options.grace).earliestOpenPeriod(now: now)) invoice" : ""
        let c = record.counts
        print("backfill \(identifier): \(c.received) lines from \(file)")
        print(
            "  accepted \(c.accepted), duplicate \(c.duplicate), late \(c.late) (\(c.adjusted) billed as adjustments\(adjustedInto)), "
                + "rejected \(c.rejected)")
        print("  lines = accepted + duplicate + late + rejected: \(c.balances ? "yes" : "NO")")
        print("  revert with: tallyctl backfill revert \(identifier) --reason ...")
    }
}

/// A progress bar on standard error, by bytes of the file read, when it is a terminal.
final class Progress {
    let total: Int
    let visible = isatty(2) == 1
    init(total: Int) { self.total = total }

    func advance(to done: Int) {
        guard visible, total > 0 else { return }
        let width = 30
        let filled = min(width, done * width / total)
        let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
        FileHandle.standardError.write(Data("\r[\(bar)] \(done * 100 / total)% \(done >> 20)/\(total >> 20) MiB".utf8))
    }

    func finish() { if visible { FileHandle.standardError.write(Data("\n".utf8)) } }
}

struct BackfillRevert: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "revert",
        abstract: "Void every event a backfill stored, as corrections with a reason (a closed period's are credited on the next open invoice).")
    @OptionGroup var global: GlobalOptions
    @OptionGroup var ledger: BackfillLedgerOptions
    @Argument(help: "The backfill's id.") var id: String
    @Option(help: "Why: kept with the corrections and shown on invoices.") var reason: String
    public init() {}

    func validate() throws {
        try ledger.validate()
        guard !reason.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else { throw ValidationError("--reason must say why") }
    }

    func run() async throws {
        let writer = try await ledger.open()
        defer { Task { await writer.shutdown() } }
        let identifier = id
        guard var record = try await writer.perform({ store throws(LedgerError) in try store.backfills().first { $0.id == identifier } }) else {
            throw RuntimeFailure("no backfill has the id '\(identifier)' (tallyctl backfill list)")
        }
        let agent = record.agent
        let now = EventTime.now()
        let actor = operatingSystemUser()
        let why = reason
        // The backfill's events: its reconciliation rows name every (period, tenant) it touched.
        let requests = try await writer.perform { store throws(LedgerError) -> [CorrectionRequest] in
            let skip = Set(store.configuration.uniqueCounts.map(\.metric))
            var requests: [CorrectionRequest] = []
            for row in try store.reconciliation(ReconciliationFilter(agent: agent)) where !row.tenant.isEmpty {
                try store.scanRawEvents(tenant: row.tenant, period: row.period) { (event: LedgerRecord) throws(LedgerError) in
                    guard event.agent == agent, event.status == .accepted || event.status == .adjusted else { return }
                    guard !skip.contains(event.event.metric) else {
                        throw .correctionRefused(
                            "the backfill stored events of '\(event.event.metric)', a unique-count metric, which a correction cannot take out")
                    }
                    requests.append(
                        CorrectionRequest(
                            key: "revert:\(identifier)/\(event.fingerprint)", tenant: event.event.tenant, timestamp: event.event.timestamp,
                            fingerprint: event.fingerprint, action: .void, reason: why, actor: actor))
                }
            }
            return requests
        }
        // The revert's keys applied by an earlier, interrupted run: read once, not per chunk.
        let before = try await writer.perform { store throws(LedgerError) in
            Set(try store.corrections(CorrectionFilter()).map(\.key).filter { $0.hasPrefix("revert:\(identifier)/") })
        }
        var voided = 0
        var already = 0
        for chunk in stride(from: 0, to: requests.count, by: 1_000) {
            let part = Array(requests[chunk..<min(chunk + 1_000, requests.count)])
            let applied = try await writer.perform { store throws(LedgerError) in try store.applyCorrections(part, now: now).map(\.key) }
            let again = applied.filter { before.contains($0) }.count
            voided += applied.count - again
            already += again
        }
        record.revertedAt = now
        record.revertReason = reason
        let saved = record
        try await writer.perform { store throws(LedgerError) in try store.saveBackfill(saved) }
        print("backfill \(identifier) reverted: \(voided) events voided" + (already > 0 ? " (\(already) already were)" : ""))
        print("  each is a correction 'revert:\(identifier)/FINGERPRINT'; closed periods are credited on the next open invoice")
    }
}

struct BackfillList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List the backfills of the ledger.")
    @OptionGroup var global: GlobalOptions
    @Option(help: "The ledger: sqlite:PATH or postgres://USER@HOST:PORT/DATABASE.") var store = "sqlite:./tally-data/ledger.db"
    public init() {}

    func run() async throws {
        let writer = try openLedger(store, groupBy: [])
        defer { Task { await writer.shutdown() } }
        let records = try await writer.perform { store throws(LedgerError) in try store.backfills() }
        print(["id", "started", "by", "lines", "accepted", "duplicate", "late", "rejected", "state", "reason"].joined(separator: "\t"))
        for record in records {
            let state = record.revertedAt.map { "reverted \($0)" } ?? (record.finished ? "done" : "incomplete")
            let c = record.counts
            print(
                [
                    record.id, record.startedAt.description, record.actor, "\(c.received)", "\(c.accepted)", "\(c.duplicate)", "\(c.late)",
                    "\(c.rejected)", state, record.reason,
                ].joined(separator: "\t"))
        }
    }
}
