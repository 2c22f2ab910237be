public import ArgumentParser
import TallyAgent
import TallyCore
import TallySpool

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `tallyctl spool ...`: look after an agent's spool. Every subcommand but `drain` opens the spool
/// read-only and changes nothing in it, also while an agent runs.
public struct SpoolCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "spool",
        abstract: "See, verify, drain and export an agent's spool.",
        subcommands: [SpoolStatus.self, SpoolInspect.self, SpoolVerify.self, SpoolDrainCommand.self, SpoolExport.self]
    )
    public init() {}
}

/// Why a spool subcommand failed, in one line.
enum SpoolCommandError: Error, CustomStringConvertible {
    case noSpool(directory: String)
    case spool(SpoolError)
    case output(path: String, operation: String, errno: Int32)

    var description: String {
        switch self {
        case .noSpool(let directory): "no spool at \(directory) (no such directory)"
        case .spool(let error): error.description
        case .output(let path, let operation, let code):
            "cannot \(operation) \(path): \(String(cString: strerror(code))) (errno \(code))"
        }
    }
}

/// `--spool DIR` and the read-only open every inspecting subcommand shares.
struct SpoolLocation: ParsableArguments {
    @Option(help: "The spool directory.") var spool = "./tally-spool"

    /// Opens the spool read-only: no lock taken, no repair, nothing written. Says on stderr when
    /// an agent holds the spool's lock (what is read is then a snapshot taken at open).
    func openReadOnly() async throws(SpoolCommandError) -> Spool {
        var info = stat()
        guard stat(spool, &info) == 0, (info.st_mode & mode_t(S_IFMT)) == mode_t(S_IFDIR) else { throw .noSpool(directory: spool) }
        if Spool.isLocked(directory: spool) {
            CommandRunner.writeError(
                "tallyctl: the spool at \(spool) is locked by a running agent; reading it read-only "
                    + "(a snapshot: nothing is changed, events appended from now on are not shown)")
        }
        var options = SpoolOptions()
        options.access = .readOnly
        do {
            return try await Spool.open(directory: spool, options: options)
        } catch {
            throw .spool(error)
        }
    }
}

/// Runs a spool call, giving its error the command's one-line form.
func spoolCall<T>(_ body: () async throws(SpoolError) -> T) async throws(SpoolCommandError) -> T {
    do {
        return try await body()
    } catch {
        throw .spool(error)
    }
}

/// Calls `body` with every event from the acknowledged position (or, with `includingAcknowledged`,
/// from the oldest one still on disk) in order, until it returns false. Returns the number of
/// corrupt regions skipped.
func forEachEvent(
    in spool: Spool, includingAcknowledged: Bool, _ body: (UsageEvent, SpoolPosition) throws(SpoolCommandError) -> Bool
) async throws(SpoolCommandError) -> Int {
    var position = SpoolPosition(segment: 0, offset: 0)
    var skipped = 0
    while true {
        let batch = try await spoolCall { () async throws(SpoolError) in
            try await spool.read(from: position, maxEvents: 1_000, includingAcknowledged: includingAcknowledged)
        }
        skipped += batch.skippedCorruptRegions
        if batch.events.isEmpty { return skipped }
        for (event, at) in zip(batch.events, batch.positions) {
            if try !body(event, at) { return skipped }
        }
        position = batch.end
    }
}

/// `tallyctl spool status`.
struct SpoolStatus: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status", abstract: "Show the backlog: events, bytes, segments, age of the oldest event.")
    @OptionGroup var location: SpoolLocation
    @Flag(help: "Print one JSON object instead of text.") var json = false
    @OptionGroup var global: GlobalOptions

    func run() async throws {
        let spool = try await location.openReadOnly()
        let stats = try await spoolCall { () async throws(SpoolError) in try await spool.stats() }
        let unrepaired = spool.recovery.problems.count
        // Read-only opens report a gap without recording it; the agent records it when it opens.
        let missingNow = spool.recovery.missingSegments.count
        await spool.close()
        let age = stats.oldestEventTime.map { max(0, EventTime.now().microseconds - $0.microseconds) / 1_000_000 }
        if json {
            var out = "{\"spool\":" + JSONWriter.quoted(location.spool)
            out += ",\"events\":\(stats.events),\"backlog_bytes\":\(stats.backlogBytes),\"bytes_on_disk\":\(stats.bytesOnDisk)"
            out += ",\"segments\":\(stats.segments)"
            out += ",\"oldest_event\":" + (stats.oldestEventTime.map { "\"\($0)\"" } ?? "null")
            out += ",\"oldest_event_age_seconds\":" + (age.map(String.init) ?? "null")
            out += ",\"quarantined_regions\":\(stats.quarantinedRegions),\"missing_segments\":\(max(stats.missingSegments, missingNow))"
            out += ",\"unrepaired_problems\":\(unrepaired)}"
            print(out)
            return
        }
        print("spool:        \(location.spool)")
        print("events:       \(stats.events) unacknowledged")
        print("backlog:      \(stats.backlogBytes) bytes (\(stats.bytesOnDisk) bytes on disk)")
        print("segments:     \(stats.segments)")
        if let oldest = stats.oldestEventTime, let age {
            print("oldest event: \(oldest) (\(ageText(seconds: age)) ago)")
        } else {
            print("oldest event: none")
        }
        print("quarantined:  \(stats.quarantinedRegions) corrupt regions")
        if max(stats.missingSegments, missingNow) > 0 {
            print(
                "missing:      \(max(stats.missingSegments, missingNow)) segments gone or emptied (their unacknowledged events are lost; see 'tallyctl spool verify')"
            )
        }
        if unrepaired > 0 {
            print("unrepaired:   \(unrepaired) (torn tail or corrupt records the agent repairs when it opens the spool; see 'tallyctl spool verify')")
        }
    }
}

/// `3d 4h 5m 6s`, leaving out zero units; `0s` for zero.
func ageText(seconds: Int64) -> String {
    let parts: [(Int64, String)] = [
        (seconds / 86_400, "d"), (seconds % 86_400 / 3_600, "h"), (seconds % 3_600 / 60, "m"), (seconds % 60, "s"),
    ]
    let text = parts.filter { $0.0 > 0 }.map { "\($0.0)\($0.1)" }.joined(separator: " ")
    return text.isEmpty ? "0s" : text
}

/// `tallyctl spool inspect`.
struct SpoolInspect: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Print spooled events as JSON lines, with filters.",
        discussion: """
            With --positions each line is {"segment":N,"offset":N,"event":{...}}. With --id the agent's side of a trace: \
            every event with that id still on disk, acknowledged or not, as \
            {"segment":N,"offset":N,"acknowledged":BOOL,"batch":N,"fingerprint":"...","event":{...}} \
            (batch: the sequence of the batch that shipped an acknowledged copy; null when not acknowledged \
            or not recorded); exit 1 when none is.
            """)
    @OptionGroup var location: SpoolLocation
    @Option(help: "Only this tenant's events.") var tenant: String?
    @Option(help: "Only this metric's events.") var metric: String?
    @Option(help: "Only events with this id, acknowledged ones still on disk included (the agent's side of `tallyctl trace`).")
    var id: String?
    @Option(help: "Only events at or after this time (RFC 3339).") var from: String?
    @Option(help: "Only events before this time (RFC 3339).") var to: String?
    @Option(help: "Print at most this many events.") var limit: Int?
    @Flag(help: "Include each event's position (segment and offset).") var positions = false
    @Flag(help: "Include acknowledged events still on disk.") var all = false
    @OptionGroup var global: GlobalOptions

    func validate() throws {
        _ = try parsedTime(from, "--from")
        _ = try parsedTime(to, "--to")
        if let limit, limit < 0 { throw ValidationError("--limit must be 0 or more") }
    }

    func run() async throws {
        let fromTime = try parsedTime(from, "--from")
        let toTime = try parsedTime(to, "--to")
        let spool = try await location.openReadOnly()
        var output = LineOutput(fd: 1, path: "standard output")
        var printed = 0
        let skipped: Int
        do {
            let acknowledged = try await spoolCall { () async throws(SpoolError) in try await spool.stats() }.acknowledged
            let shipped = id == nil ? [] : try await spoolCall { () async throws(SpoolError) in try await spool.acknowledgedBatches() }
            skipped = try await forEachEvent(in: spool, includingAcknowledged: all || id != nil) { event, position throws(SpoolCommandError) in
                if let limit, printed >= limit { return false }
                if let tenant, event.tenant != tenant { return true }
                if let metric, event.metric != metric { return true }
                if let id, event.id != id { return true }
                if let fromTime, event.timestamp < fromTime { return true }
                if let toTime, event.timestamp >= toTime { return true }
                if id != nil {
                    // The batch that shipped an acknowledged copy, when the agent recorded it.
                    let batch = position < acknowledged ? AcknowledgedBatch.covering(position, in: shipped).map { "\($0.sequence)" } : nil
                    try output.write(
                        "{\"segment\":\(position.segment),\"offset\":\(position.offset),\"acknowledged\":\(position < acknowledged),"
                            + "\"batch\":\(batch ?? "null"),\"fingerprint\":\"\(Fingerprint(of: event))\",\"event\":\(event.jsonLine)}")
                } else if positions {
                    try output.write("{\"segment\":\(position.segment),\"offset\":\(position.offset),\"event\":\(event.jsonLine)}")
                } else {
                    try output.write(event.jsonLine)
                }
                printed += 1
                return true
            }
            try output.flush()
        } catch {
            await spool.close()
            throw error
        }
        await spool.close()
        reportSkipped(skipped)
        if let id, printed == 0 {
            CommandRunner.writeError(
                "tallyctl: no event with id '\(id)' is in the spool at \(location.spool): this agent never received it, or the "
                    + "collector acknowledged it and its segment was deleted; `tallyctl trace --tenant TENANT --id \(id)` asks the collector")
            throw ExitCode(1)
        }
    }
}

/// A time option parsed as RFC 3339; bad input is bad usage.
func parsedTime(_ text: String?, _ option: String) throws -> EventTime? {
    guard let text else { return nil }
    do {
        return try EventTime(parsing: text)
    } catch {
        throw ValidationError("\(option): \(error)")
    }
}

func reportSkipped(_ skipped: Int) {
    if skipped > 0 {
        CommandRunner.writeError("tallyctl: skipped \(skipped) corrupt regions that hold no readable event (see 'tallyctl spool verify')")
    }
}

/// `tallyctl spool verify`.
struct SpoolVerify: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Check every record's CRC, the segment numbering, the checkpoint and shipper.seq.",
        discussion: "Exits 1 when any record or segment header is corrupt, a segment is missing or emptied (segment numbers "
            + "run in sequence), or the checkpoint or shipper.seq is damaged; 0 when the spool is clean. A torn tail "
            + "(an interrupted append, truncated when the agent opens the spool) is reported but is not corruption.")
    @OptionGroup var location: SpoolLocation
    @OptionGroup var global: GlobalOptions

    func run() async throws {
        let spool = try await location.openReadOnly()
        let verification = try await spoolCall { () async throws(SpoolError) in try await spool.verify() }
        let shipped = try await spoolCall { () async throws(SpoolError) in try await spool.stats() }.shipped
        await spool.close()
        var corrupt = 0
        for problem in verification.problems {
            let what: String
            switch problem.kind {
            case .corruptRecord: what = "corrupt record"
            case .undecodableRecord: what = "undecodable record (its CRC matches)"
            case .badSegmentHeader: what = "bad segment header"
            case .tornTail: what = "torn tail (an interrupted append; the agent truncates it when it opens the spool)"
            case .missingSegment: what = "segment missing or emptied (its unacknowledged events are lost)"
            case .badCheckpoint: what = "checkpoint damaged or past its segment's end (events may be sent again; the collector dedupes them)"
            case .badSequenceFile: what = "shipper.seq damaged"
            }
            if problem.kind != .tornTail { corrupt += 1 }
            if problem.kind == .missingSegment || problem.kind == .badCheckpoint {
                print("segment \(problem.position.segment): \(what)")
            } else {
                print("segment \(problem.position.segment) offset \(problem.position.offset): \(what), \(problem.length) bytes")
            }
        }
        switch SequenceFileState.inspect(spoolDirectory: location.spool) {
        case .valid: break
        case .missing:
            if shipped {
                corrupt += 1
                print("shipper.seq: missing beside a spool that has shipped (the agent continues from a time-based batch sequence)")
            }
        case .damaged:
            corrupt += 1
            print("shipper.seq: damaged (the agent continues from a time-based batch sequence)")
        }
        let verdict = corrupt == 0 ? "clean" : "\(corrupt) corrupt"
        print("verified \(verification.segments) segments, \(verification.records) records, \(verification.bytes) bytes: \(verdict)")
        if corrupt > 0 { throw ExitCode(1) }
    }
}

/// `tallyctl spool export`.
struct SpoolExport: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export", abstract: "Write the unacknowledged events (or --all) as JSON lines.")
    @OptionGroup var location: SpoolLocation
    @Option(help: "Write to this file (replaced) instead of standard output.") var output: String?
    @Flag(help: "Include acknowledged events still on disk.") var all = false
    @OptionGroup var global: GlobalOptions

    func run() async throws {
        if let output, isInside(output, directory: location.spool) {
            throw ValidationError("--output must not be inside the spool directory \(location.spool)")
        }
        let spool = try await location.openReadOnly()
        var sink = LineOutput(fd: 1, path: "standard output")
        if let output {
            do {
                sink = try LineOutput(creating: output)
            } catch {
                await spool.close()
                throw error
            }
        }
        defer { sink.close() }
        let skipped: Int
        do {
            skipped = try await forEachEvent(in: spool, includingAcknowledged: all) { event, _ throws(SpoolCommandError) in
                try sink.write(event.jsonLine)
                return true
            }
            try sink.flush()
            if output != nil { try sink.sync() }
        } catch {
            await spool.close()
            throw error
        }
        await spool.close()
        reportSkipped(skipped)
    }
}

/// Whether `path` (a file that may not exist yet) would be inside `directory`.
func isInside(_ path: String, directory: String) -> Bool {
    let parent = path.contains("/") ? String(path[..<(path.lastIndex(of: "/") ?? path.endIndex)]) : "."
    guard let resolvedParent = resolved(parent.isEmpty ? "/" : parent), let resolvedDirectory = resolved(directory) else { return false }
    return resolvedParent == resolvedDirectory || resolvedParent.hasPrefix(resolvedDirectory + "/")
}

private func resolved(_ path: String) -> String? {
    guard let pointer = realpath(path, nil) else { return nil }
    defer { free(pointer) }
    return String(cString: pointer)
}

/// Lines written through a 64 KiB buffer to a file descriptor.
struct LineOutput {
    let fd: Int32
    let path: String
    let owned: Bool
    private var buffer: [UInt8] = []

    init(fd: Int32, path: String) {
        self.fd = fd
        self.path = path
        self.owned = false
        buffer.reserveCapacity(1 << 16)
    }

    /// Creates (or truncates) the file at `path`.
    init(creating path: String) throws(SpoolCommandError) {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .output(path: path, operation: "create", errno: errno) }
        self.fd = fd
        self.path = path
        self.owned = true
        buffer.reserveCapacity(1 << 16)
    }

    mutating func write(_ line: String) throws(SpoolCommandError) {
        buffer.append(contentsOf: line.utf8)
        buffer.append(UInt8(ascii: "\n"))
        if buffer.count >= 1 << 16 { try flush() }
    }

    mutating func flush() throws(SpoolCommandError) {
        var done = 0
        while done < buffer.count {
            let count = buffer.withUnsafeBytes { raw in Glibc.write(fd, raw.baseAddress.map { $0 + done }, raw.count - done) }
            if count < 0 {
                if errno == EINTR { continue }
                throw .output(path: path, operation: "write", errno: errno)
            }
            done += count
        }
        buffer.removeAll(keepingCapacity: true)
    }

    func sync() throws(SpoolCommandError) {
        guard fsync(fd) == 0 else { throw .output(path: path, operation: "fsync", errno: errno) }
    }

    func close() { if owned { _ = Glibc.close(fd) } }
}
