import Logging
import Synchronization

/// The lines a `Logger` logged, with their levels: pass `lines.logger()` where a logger goes.
public final class LogLines: Sendable {
    private let lines = Mutex<[(level: Logger.Level, message: String)]>([])

    public init() {}

    public var all: [(level: Logger.Level, message: String)] { lines.withLock { $0 } }

    public func contains(_ message: String, at level: Logger.Level) -> Bool { all.contains { $0.level == level && $0.message == message } }
    public func contains(_ message: String) -> Bool { all.contains { $0.message == message } }
    /// How many lines have exactly this message.
    public func count(_ message: String) -> Int { all.filter { $0.message == message }.count }

    /// A logger whose lines go here.
    public func logger(label: String = "test") -> Logger { Logger(label: label) { _ in Handler(lines: self) } }

    struct Handler: LogHandler {
        let lines: LogLines
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(event: LogEvent) { lines.lines.withLock { $0.append((event.level, event.message.description)) } }
    }
}
