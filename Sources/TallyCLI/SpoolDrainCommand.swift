public import ArgumentParser
import Logging
import ServiceLifecycle
import TallyAgent
import TallyConfig
import TallyCore
import TallySpool
import TallyTLS

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `tallyctl spool drain`: ships a stopped agent's spool to a collector with the agent's own
/// shipper (same batches, same durable sequence numbers, acks before deletion), then exits.
///
/// Safe to interrupt (Ctrl-C): unacknowledged events stay in the spool, and the next run goes on
/// from the acknowledged position. Safe to run twice: the collector deduplicates by batch and by
/// fingerprint, and a drained spool has nothing to send. Refuses a spool a running agent holds.
public struct SpoolDrainCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "drain", abstract: "Ship the spool to a collector while the agent is stopped.")

    @OptionGroup public var global: GlobalOptions
    @Option(help: "The spool directory.") public var spool = "./tally-spool"
    @Option(
        help: ArgumentHelp(
            "A collector, HOST:PORT (repeatable).",
            discussion: "As the agent does: start at the collector the agent id picks, move to the next in the order "
                + "given (wrapping) when one fails or sends goaway. Pass the agent's own --collector list and --agent-id."))
    public var collector: [String] = []
    @Option(help: "The agent id to ship as (default: the host name; use the agent's own id).") public var agentId: String?
    @Option(help: "The agent's secret key (none: open mode).") public var key: String?
    @Option(help: "At most this many events per second.") public var rate: Int?
    @OptionGroup public var transport: CollectorTransportOptions

    public init() {}

    public func validate() throws {
        guard !collector.isEmpty else { throw ValidationError("--collector HOST:PORT is required") }
        for address in collector { try checkAddress(address, "--collector") }
        if let rate, rate < 1 { throw ValidationError("--rate must be at least 1 event per second") }
    }

    public func run() async throws {
        var logger = Logger(label: "tallyctl.drain")
        logger.logLevel = Logger.Level(rawValue: global.logLevel.rawValue) ?? .info
        let spoolHandle: Spool
        do {
            spoolHandle = try await Spool.open(directory: spool)
        } catch .locked {
            throw RuntimeFailure("the spool at \(spool) is held by a running tally-agent; stop the agent first (it ships its spool itself)")
        } catch {
            throw RuntimeFailure("cannot open the spool at \(spool): \(error)")
        }
        let total = (try? await spoolHandle.stats().events) ?? 0
        if total == 0 {
            print("nothing to drain: the spool at \(spool) has no unacknowledged events")
            await spoolHandle.close()
            return
        }
        var settings = Shipper.Settings(
            collectors: try collector.map { try HostPort(parsing: $0, option: "--collector") },
            agentId: agentId ?? AgentConfig.defaultAgentId(), key: key)
        settings.stopWhenDrained = true
        settings.allowPlaintextRemote = transport.allowPlaintextRemote
        do {
            settings.tls = try transport.tls(over: nil).map { files throws(TLSSetupError) in try ClientTLS(files, place: "--tls") }
        } catch {
            await spoolHandle.close()
            throw RuntimeFailure("cannot set up TLS: \(error)")
        }
        settings.eventsPerSecond = rate
        let shipper = Shipper(spool: spoolHandle, settings: settings, metrics: AgentMetrics(), logger: logger)
        let progress = DrainProgress(total: total, terminal: isatty(1) == 1)
        let reporter = Task {
            while !Task.isCancelled {
                progress.show(shipper.status.snapshot)
                try? await Task.sleep(for: .milliseconds(progress.terminal ? 250 : 2_000))
            }
        }
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: [.init(service: shipper, successTerminationBehavior: .gracefullyShutdownGroup)],
                gracefulShutdownSignals: [.sigint, .sigterm], logger: logger))
        var outcome: Result<Void, any Error> = .success(())
        do { try await group.run() } catch { outcome = .failure(error) }
        reporter.cancel()
        _ = await reporter.result
        let left = (try? await spoolHandle.stats().events) ?? -1
        await spoolHandle.close()
        progress.show(shipper.status.snapshot, final: true)
        try outcome.get()
        if left != 0 {
            throw RuntimeFailure("stopped with \(left) events still in the spool; run the same command again to go on")
        }
        print("drained \(total) events from \(spool)")
    }
}

/// Prints drain progress: a bar with ETA on a terminal, plain lines otherwise.
final class DrainProgress: Sendable {
    let total: Int
    let terminal: Bool
    let started = ContinuousClock.now

    init(total: Int, terminal: Bool) {
        self.total = total
        self.terminal = terminal
    }

    func show(_ status: ShipperStatus.Snapshot, final: Bool = false) {
        let done = min(status.eventsAcked, total)
        let elapsed = (ContinuousClock.now - started).components
        let elapsedMs = max(1, Int(elapsed.seconds * 1_000 + elapsed.attoseconds / 1_000_000_000_000_000))
        let perSecond = done * 1_000 / elapsedMs
        let eta = perSecond > 0 ? "\((total - done) / perSecond)s" : "?"
        let percent = total > 0 ? done * 100 / total : 100
        let connection = status.connectedTo.map { "→ \($0)" } ?? "connecting"
        if terminal {
            let width = 30
            let filled = total > 0 ? done * width / total : width
            let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
            var line = "\r[\(bar)] \(percent)% \(done)/\(total) events, \(perSecond)/s, ETA \(eta) \(connection)   "
            if final { line += "\n" }
            writeOut(line)
        } else {
            writeOut("drain: \(done)/\(total) events (\(percent)%), \(perSecond)/s, ETA \(eta), \(connection)\n")
        }
    }

    private func writeOut(_ text: String) {
        let bytes = Array(text.utf8)
        _ = bytes.withUnsafeBytes { write(1, $0.baseAddress, $0.count) }
    }
}
