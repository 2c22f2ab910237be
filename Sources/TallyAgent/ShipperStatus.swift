import Synchronization
public import TallyConfig

/// What the shipper is doing, for `/healthz`, progress lines and tests. Thread-safe.
public final class ShipperStatus: Sendable {
    /// A snapshot.
    public struct Snapshot: Sendable, Hashable {
        /// The collector of the current session, once welcomed.
        public var connectedTo: HostPort?
        public var lastError: String?
        /// Connections opened (the first one included).
        public var connections = 0
        public var batchesSent = 0
        public var batchesAcked = 0
        /// Events the collector acknowledged (accepted + duplicate + late + rejected).
        public var eventsAcked = 0
        /// Whether the shipper found the spool empty with nothing in flight at its last look.
        public var drained = false
    }

    private let state = Mutex(Snapshot())

    public init() {}

    public var snapshot: Snapshot { state.withLock { $0 } }

    func update(_ body: (inout Snapshot) -> Void) { state.withLock { body(&$0) } }
}
