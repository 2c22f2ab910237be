/// Events kept as their fields' UTF-8 bytes in one buffer, with their numbers decoded: what the
/// agent's spool reader hands the batch payload encoder when it ships a backlog.
///
/// Why not ``UsageEvent``s: shipping reads every stored event only to encode it again. A
/// ``UsageEvent`` costs an allocation for its properties and one for each string past 15 bytes
/// (every UUID id, most paths), all freed again on the encoding thread; in a drain the agent's
/// spool reading and encoding were ~1.3 µs of CPU per event (`tally-bench agent`), about a
/// seventh of the whole pipeline's. Here a batch is three arrays however many events it holds.
///
/// The spans are valid UTF-8 and each event's property keys are unique and in the order of
/// their UTF-8 bytes: whoever appends checks that, as a ``UsageEvent`` requires it
/// (``EventRecordCodec`` in the spool does, with the same checks as its decoder).
public struct EventSpans: Sendable, Hashable {
    /// Bytes of ``bytes``.
    public struct Span: Sendable, Hashable {
        public var start: Int
        public var count: Int

        public init(start: Int, count: Int) {
            self.start = start
            self.count = count
        }

        /// Its bytes' positions in ``EventSpans/bytes``.
        public var range: Range<Int> { start..<(start + count) }
    }

    /// One event: its numbers, and where its strings are.
    public struct Event: Sendable, Hashable {
        public var timestamp: EventTime
        public var quantity: Quantity
        public var tenant: Span
        public var metric: Span
        public var id: Span?
        /// Its properties' positions in ``EventSpans/properties``.
        public var properties: Range<Int>

        public init(timestamp: EventTime, quantity: Quantity, tenant: Span, metric: Span, id: Span?, properties: Range<Int>) {
            self.timestamp = timestamp
            self.quantity = quantity
            self.tenant = tenant
            self.metric = metric
            self.id = id
            self.properties = properties
        }
    }

    /// A property: where its key and its value are.
    public struct Property: Sendable, Hashable {
        public var key: Span
        public var value: Span

        public init(key: Span, value: Span) {
            self.key = key
            self.value = value
        }
    }

    /// The strings' bytes (and whatever else the appender keeps there).
    public var bytes: [UInt8] = []
    public var events: [Event] = []
    /// Every event's properties, event after event.
    public var properties: [Property] = []

    public init() {}

    public var count: Int { events.count }
    public var isEmpty: Bool { events.isEmpty }

    /// The string at `span`.
    public func string(_ span: Span) -> String { String(decoding: bytes[span.range], as: UTF8.self) }

    /// The event at `index` as a ``UsageEvent`` (tests, and callers that need one).
    public func usageEvent(_ index: Int) -> UsageEvent {
        let event = events[index]
        let pairs = properties[event.properties].map { TallyCore.Property(key: string($0.key), value: string($0.value)) }
        return UsageEvent(
            tenant: string(event.tenant), metric: string(event.metric), quantity: event.quantity, timestamp: event.timestamp,
            id: event.id.map(string), properties: Properties(inOrder: pairs) ?? Properties(pairs.map { ($0.key, $0.value) }))
    }

    /// Every event as a ``UsageEvent``.
    public var usageEvents: [UsageEvent] { events.indices.map(usageEvent) }
}
