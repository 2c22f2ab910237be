/// The `Encoder` behind ``JSONWriter/encode(_:)``: builds a tree of nodes (containers stay open
/// while their members are encoded, so nothing can be written before the end), then writes it
/// through ``JSONWriter``. Scalars are written as soon as they are given.
struct CanonicalEncoder: Encoder {
    /// One value being built: a scalar already written, an object or an array.
    final class Node {
        enum Kind { case empty, scalar, object, array }
        var kind = Kind.empty
        var scalar = ""
        /// In the order given; ``JSONWriter/object(_:)`` sorts them and keeps a repeated key's last.
        var members: [(key: String, child: Child)] = []
        var elements: [Child] = []

        /// A member or element: a scalar's text kept in place (no node of its own), or a node.
        enum Child {
            case scalar(String)
            case node(Node)

            func write(into out: inout String) {
                switch self {
                case .scalar(let text): out += text
                case .node(let node): node.write(into: &out)
                }
            }
        }

        func set(scalar text: String) {
            kind = .scalar
            scalar = text
        }

        func becomeObject() {
            if kind != .object {
                kind = .object
                members = []
            }
        }

        func becomeArray() {
            if kind != .array {
                kind = .array
                elements = []
            }
        }

        /// The canonical text; a value that encoded nothing is `{}` (as Foundation writes it).
        var text: String {
            var out = ""
            write(into: &out)
            return out
        }

        /// Appends the canonical text to `out`: the text ``JSONWriter/object(_:)`` and
        /// ``JSONWriter/array(_:)`` make of the members' texts, written into one string rather
        /// than a string per member and per level, each copied into its parent's (the encoding
        /// of an invoice was two fifths of a charges read's time).
        func write(into out: inout String) {
            switch kind {
            case .empty: out += "{}"
            case .scalar: out += scalar
            case .object:
                out += "{"
                for (position, index) in JSONWriter.canonicalOrder(of: members.map(\.key)).enumerated() {
                    if position > 0 { out += "," }
                    JSONWriter.appendQuoted(members[index].key, to: &out)
                    out += ":"
                    members[index].child.write(into: &out)
                }
                out += "}"
            case .array:
                out += "["
                for (position, element) in elements.enumerated() {
                    if position > 0 { out += "," }
                    element.write(into: &out)
                }
                out += "]"
            }
        }
    }

    let node: Node
    let path: CodingPathLink?
    var codingPath: [any CodingKey] { CodingPathLink.keys(path) }
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    /// Encodes `value` into `node`: ``JSONText`` as it is, everything else through its conformance.
    static func encode(_ value: some Encodable, into node: Node, at path: CodingPathLink?) throws {
        if let text = value as? JSONText {
            node.set(scalar: text.text)
            return
        }
        try value.encode(to: CanonicalEncoder(node: node, path: path))
    }

    static func refuseFloat(_ value: some BinaryFloatingPoint, at path: [any CodingKey]) -> JSONEncodingError {
        JSONEncodingError(
            path: dotted(path), problem: "\(value) is binary floating point, which Tally never writes: give exact decimal text")
    }

    static func dotted(_ path: [any CodingKey]) -> String {
        path.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
    }

    func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
        node.becomeObject()
        return KeyedEncodingContainer(KeyedContainer<Key>(node: node, path: path))
    }

    func unkeyedContainer() -> any UnkeyedEncodingContainer {
        node.becomeArray()
        return UnkeyedContainer(node: node, path: path)
    }

    func singleValueContainer() -> any SingleValueEncodingContainer {
        SingleValueContainer(node: node, path: path)
    }
}

/// A coding path as a chain from the value to the root: one link per nested value, where an
/// array of every key from the root (`codingPath + [key]`) was copied at each level; the array
/// is made only when asked for (an error's message, a conformance that reads it).
final class CodingPathLink {
    let parent: CodingPathLink?
    let key: any CodingKey

    init(_ parent: CodingPathLink?, _ key: any CodingKey) {
        self.parent = parent
        self.key = key
    }

    /// The keys from the root to `link`.
    static func keys(_ link: CodingPathLink?) -> [any CodingKey] {
        var keys: [any CodingKey] = []
        var next = link
        while let current = next {
            keys.append(current.key)
            next = current.parent
        }
        return keys.reversed()
    }
}

/// A key for array positions and `super`.
private struct IndexKey: CodingKey {
    private let name: String?
    let intValue: Int?
    var stringValue: String { name ?? intValue.map { String($0) } ?? "" }
    init(stringValue: String) {
        name = stringValue
        intValue = nil
    }
    init(intValue: Int) {
        name = nil
        self.intValue = intValue
    }
}

extension CanonicalEncoder {
    struct KeyedContainer<Key: CodingKey>: KeyedEncodingContainerProtocol {
        let node: Node
        let path: CodingPathLink?
        var codingPath: [any CodingKey] { CodingPathLink.keys(path) }

        private func put(_ text: String, _ key: Key) { node.members.append((key.stringValue, .scalar(text))) }

        mutating func encodeNil(forKey key: Key) throws { put("null", key) }
        mutating func encode(_ value: Bool, forKey key: Key) throws { put(value ? "true" : "false", key) }
        mutating func encode(_ value: String, forKey key: Key) throws { put(JSONWriter.quoted(value), key) }
        mutating func encode(_ value: Double, forKey key: Key) throws { throw refuseFloat(value, at: CodingPathLink.keys(CodingPathLink(path, key))) }
        mutating func encode(_ value: Float, forKey key: Key) throws { throw refuseFloat(value, at: CodingPathLink.keys(CodingPathLink(path, key))) }
        mutating func encode(_ value: Int, forKey key: Key) throws { put(String(value), key) }
        mutating func encode(_ value: Int8, forKey key: Key) throws { put(String(value), key) }
        mutating func encode(_ value: Int16, forKey key: Key) throws { put(String(value), key) }
        mutating func encode(_ value: Int32, forKey key: Key) throws { put(String(value), key) }
        mutating func encode(_ value: Int64, forKey key: Key) throws { put(String(value), key) }
        mutating func encode(_ value: Int128, forKey key: Key) throws { put(String(value), key) }
        mutating func encode(_ value: UInt, forKey key: Key) throws { put(String(value), key) }
        mutating func encode(_ value: UInt8, forKey key: Key) throws { put(String(value), key) }
        mutating func encode(_ value: UInt16, forKey key: Key) throws { put(String(value), key) }
        mutating func encode(_ value: UInt32, forKey key: Key) throws { put(String(value), key) }
        mutating func encode(_ value: UInt64, forKey key: Key) throws { put(String(value), key) }
        mutating func encode(_ value: UInt128, forKey key: Key) throws { put(String(value), key) }

        mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws {
            let child = Node()
            try CanonicalEncoder.encode(value, into: child, at: CodingPathLink(path, key))
            node.members.append((key.stringValue, .node(child)))
        }

        mutating func nestedContainer<NestedKey: CodingKey>(
            keyedBy keyType: NestedKey.Type, forKey key: Key
        )
            -> KeyedEncodingContainer<NestedKey>
        {
            let child = Node()
            node.members.append((key.stringValue, .node(child)))
            return CanonicalEncoder(node: child, path: CodingPathLink(path, key)).container(keyedBy: keyType)
        }

        mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
            let child = Node()
            node.members.append((key.stringValue, .node(child)))
            return CanonicalEncoder(node: child, path: CodingPathLink(path, key)).unkeyedContainer()
        }

        mutating func superEncoder() -> any Encoder { superEncoder(named: IndexKey(stringValue: "super")) }

        mutating func superEncoder(forKey key: Key) -> any Encoder { superEncoder(named: key) }

        private func superEncoder(named key: any CodingKey) -> any Encoder {
            let child = Node()
            node.members.append((key.stringValue, .node(child)))
            return CanonicalEncoder(node: child, path: CodingPathLink(path, key))
        }
    }

    struct UnkeyedContainer: UnkeyedEncodingContainer {
        let node: Node
        let path: CodingPathLink?
        var codingPath: [any CodingKey] { CodingPathLink.keys(path) }
        var count: Int { node.elements.count }

        private var nextPath: CodingPathLink { CodingPathLink(path, IndexKey(intValue: count)) }

        private func append(_ text: String) { node.elements.append(.scalar(text)) }

        mutating func encodeNil() throws { append("null") }
        mutating func encode(_ value: Bool) throws { append(value ? "true" : "false") }
        mutating func encode(_ value: String) throws { append(JSONWriter.quoted(value)) }
        mutating func encode(_ value: Double) throws { throw refuseFloat(value, at: CodingPathLink.keys(nextPath)) }
        mutating func encode(_ value: Float) throws { throw refuseFloat(value, at: CodingPathLink.keys(nextPath)) }
        mutating func encode(_ value: Int) throws { append(String(value)) }
        mutating func encode(_ value: Int8) throws { append(String(value)) }
        mutating func encode(_ value: Int16) throws { append(String(value)) }
        mutating func encode(_ value: Int32) throws { append(String(value)) }
        mutating func encode(_ value: Int64) throws { append(String(value)) }
        mutating func encode(_ value: Int128) throws { append(String(value)) }
        mutating func encode(_ value: UInt) throws { append(String(value)) }
        mutating func encode(_ value: UInt8) throws { append(String(value)) }
        mutating func encode(_ value: UInt16) throws { append(String(value)) }
        mutating func encode(_ value: UInt32) throws { append(String(value)) }
        mutating func encode(_ value: UInt64) throws { append(String(value)) }
        mutating func encode(_ value: UInt128) throws { append(String(value)) }

        mutating func encode<T: Encodable>(_ value: T) throws {
            let child = Node()
            try CanonicalEncoder.encode(value, into: child, at: nextPath)
            node.elements.append(.node(child))
        }

        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type) -> KeyedEncodingContainer<NestedKey> {
            let path = nextPath
            let child = Node()
            node.elements.append(.node(child))
            return CanonicalEncoder(node: child, path: path).container(keyedBy: keyType)
        }

        mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer {
            let path = nextPath
            let child = Node()
            node.elements.append(.node(child))
            return CanonicalEncoder(node: child, path: path).unkeyedContainer()
        }

        mutating func superEncoder() -> any Encoder {
            let path = nextPath
            let child = Node()
            node.elements.append(.node(child))
            return CanonicalEncoder(node: child, path: path)
        }
    }

    struct SingleValueContainer: SingleValueEncodingContainer {
        let node: Node
        let path: CodingPathLink?
        var codingPath: [any CodingKey] { CodingPathLink.keys(path) }

        mutating func encodeNil() throws { node.set(scalar: "null") }
        mutating func encode(_ value: Bool) throws { node.set(scalar: value ? "true" : "false") }
        mutating func encode(_ value: String) throws { node.set(scalar: JSONWriter.quoted(value)) }
        mutating func encode(_ value: Double) throws { throw refuseFloat(value, at: codingPath) }
        mutating func encode(_ value: Float) throws { throw refuseFloat(value, at: codingPath) }
        mutating func encode(_ value: Int) throws { node.set(scalar: String(value)) }
        mutating func encode(_ value: Int8) throws { node.set(scalar: String(value)) }
        mutating func encode(_ value: Int16) throws { node.set(scalar: String(value)) }
        mutating func encode(_ value: Int32) throws { node.set(scalar: String(value)) }
        mutating func encode(_ value: Int64) throws { node.set(scalar: String(value)) }
        mutating func encode(_ value: Int128) throws { node.set(scalar: String(value)) }
        mutating func encode(_ value: UInt) throws { node.set(scalar: String(value)) }
        mutating func encode(_ value: UInt8) throws { node.set(scalar: String(value)) }
        mutating func encode(_ value: UInt16) throws { node.set(scalar: String(value)) }
        mutating func encode(_ value: UInt32) throws { node.set(scalar: String(value)) }
        mutating func encode(_ value: UInt64) throws { node.set(scalar: String(value)) }
        mutating func encode(_ value: UInt128) throws { node.set(scalar: String(value)) }

        mutating func encode<T: Encodable>(_ value: T) throws {
            try CanonicalEncoder.encode(value, into: node, at: path)
        }
    }
}

private func refuseFloat(_ value: some BinaryFloatingPoint, at path: [any CodingKey]) -> JSONEncodingError {
    CanonicalEncoder.refuseFloat(value, at: path)
}
