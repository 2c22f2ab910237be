/// One usage event: who used what, how much, and when.
///
/// A value of this type has passed validation: its fields are within ``EventLimits`` and its
/// properties are unique and sorted by the UTF-8 bytes of their keys, so equal events compare
/// equal and encode to the same bytes.
public struct UsageEvent: Sendable, Hashable {
    public var tenant: String
    public var metric: String
    public var quantity: Quantity
    public var timestamp: EventTime
    /// The caller's idempotency id, when it gave one. With an id, the fingerprint covers tenant,
    /// metric, timestamp and id; without one, every field.
    public var id: String?
    public var properties: Properties

    public init(
        tenant: String, metric: String, quantity: Quantity, timestamp: EventTime, id: String? = nil,
        properties: Properties = Properties()
    ) {
        self.tenant = tenant
        self.metric = metric
        self.quantity = quantity
        self.timestamp = timestamp
        self.id = id
        self.properties = properties
    }
}

/// A property of an event: a key and a string value.
public struct Property: Sendable, Hashable {
    public var key: String
    public var value: String
    public init(key: String, value: String) {
        self.key = key
        self.value = value
    }
}

/// An event's properties: unique keys, kept sorted by the UTF-8 bytes of the key.
public struct Properties: Sendable, Hashable, RandomAccessCollection {
    public private(set) var elements: [Property]

    public init() { elements = [] }

    /// Properties from pairs; a later pair replaces an earlier one with the same key.
    public init(_ pairs: [(String, String)]) {
        elements = []
        for (key, value) in pairs { self[key] = value }
    }

    /// Properties from elements whose keys are distinct and in byte order already (what a
    /// decoder of the canonical layouts reads), in one array, where setting them one by one
    /// searches and regrows the array for each: decoding is per event on the agent's spool reads
    /// and the collector's batches. Nil when the keys are not distinct and in order (checked: one
    /// comparison per pair).
    public init?(inOrder elements: [Property]) {
        for (before, after) in zip(elements, elements.dropFirst()) where !Self.precedes(before.key, after.key) { return nil }
        self.elements = elements
    }

    public var startIndex: Int { elements.startIndex }
    public var endIndex: Int { elements.endIndex }
    public subscript(position: Int) -> Property { elements[position] }

    public subscript(key: String) -> String? {
        get {
            let position = insertionPoint(for: key)
            return position < elements.count && elements[position].key == key ? elements[position].value : nil
        }
        set {
            let position = insertionPoint(for: key)
            let exists = position < elements.count && elements[position].key == key
            switch (exists, newValue) {
            case (true, let value?): elements[position].value = value
            case (true, nil): elements.remove(at: position)
            case (false, let value?): elements.insert(Property(key: key, value: value), at: position)
            case (false, nil): break
            }
        }
    }

    private func insertionPoint(for key: String) -> Int {
        var low = 0
        var high = elements.count
        while low < high {
            let middle = (low + high) / 2
            if Self.precedes(elements[middle].key, key) { low = middle + 1 } else { high = middle }
        }
        return low
    }

    /// Byte order of the UTF-8 encodings: the order the canonical encoding uses.
    static func precedes(_ a: String, _ b: String) -> Bool {
        a.utf8.lexicographicallyPrecedes(b.utf8)
    }
}
