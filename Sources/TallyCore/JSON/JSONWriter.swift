/// Tally's one JSON writer. Its output is canonical: one value always gives the same bytes, on
/// every machine and in every release, so a hash taken over them identifies the content (a final
/// invoice's SHA-256 is taken over exactly what it writes).
///
/// The canonical form:
/// - no whitespace between tokens, no trailing newline;
/// - object members sorted by key, comparing the keys' UTF-8 bytes (so by Unicode scalar); of
///   two members with one key the last one given wins; arrays keep their order;
/// - strings as RFC 8785 writes them: `"` and `\` escaped, the control characters as `\b \f \n
///   \r \t` or `\u00xx` (lowercase hex), everything else (`/`, non-ASCII) as itself, in UTF-8;
/// - numbers: integers in decimal; a ``JSONValue/number(_:)`` as the text it holds. Binary
///   floating point is never written (``encode(_:)`` refuses `Float` and `Double`): exact
///   decimals (``Quantity``, money) are written as their canonical text in a string.
///
/// Values reach it three ways: a ``JSONValue`` (``write(_:)``), an `Encodable` (``encode(_:)``,
/// for API answers, invoices and files), or members already written (``object(_:)``,
/// ``array(_:)``, ``quoted(_:)``) for the hot paths that write event lines and the agent's
/// answers byte by byte in their documented member order.
public enum JSONWriter {
    /// `value` as a quoted JSON string.
    public static func quoted(_ value: String) -> String {
        var out = ""
        appendQuoted(value, to: &out)
        return out
    }

    /// Appends `value` as a quoted JSON string to `out` (``quoted(_:)`` without a string of its
    /// own: for writers that assemble a document member by member in canonical order).
    public static func appendQuoted(_ value: String, to out: inout String) {
        // Most strings (names, decimals, periods) need no escape: copied whole, not scalar by scalar.
        if !value.utf8.contains(where: { $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") || $0 < 0x20 }) {
            out += "\""
            out += value
            out += "\""
            return
        }
        out.reserveCapacity(out.utf8.count + value.utf8.count + 2)
        out += "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        out += "\""
    }

    /// An array of values already written.
    public static func array(_ elements: some Sequence<String>) -> String {
        "[" + elements.joined(separator: ",") + "]"
    }

    /// An object of members whose values are already written: sorted by key, the last member
    /// of a repeated key kept. Keys are compared as bytes, so `"é"` and `"e\u{301}"` (equal as
    /// Swift strings) are two keys, as they are in JSON.
    public static func object(_ members: some Sequence<(key: String, value: String)>) -> String {
        let members = Array(members)
        return "{" + canonicalOrder(of: members.map(\.key)).map { quoted(members[$0].key) + ":" + members[$0].value }.joined(separator: ",")
            + "}"
    }

    /// The positions of an object's members in canonical order: sorted by key bytes, a
    /// repeated key's last member only. Concrete types and each key's bytes taken once: the
    /// generic form (`some Collection<String>`, keys compared through `String.UTF8View`) was
    /// half of encoding an invoice, most of it in the runtime's generic metadata lookups.
    static func canonicalOrder(of keys: [String]) -> [Int] {
        let bytes = keys.map { Array($0.utf8) }
        // Ties keep the order given, so that a repeated key's last member is the last of its run.
        let sorted = keys.indices.sorted { left, right in
            bytes[left] == bytes[right] ? left < right : bytes[left].lexicographicallyPrecedes(bytes[right])
        }
        var order: [Int] = []
        order.reserveCapacity(sorted.count)
        for (position, index) in sorted.enumerated() {
            if position + 1 < sorted.count, bytes[sorted[position + 1]] == bytes[index] { continue }
            order.append(index)
        }
        return order
    }

    /// The canonical text of `value`.
    public static func write(_ value: JSONValue) -> String {
        switch value {
        case .object(let members): object(members.map { (key: $0.key, value: write($0.value)) })
        case .array(let elements): array(elements.map(write))
        case .string(let text): quoted(text)
        case .number(let text): text
        case .bool(let flag): flag ? "true" : "false"
        case .null: "null"
        }
    }

    /// The canonical text of `value`, through its `Encodable` conformance. Optionals that are
    /// nil are left out (as `encodeIfPresent` does); a ``JSONText`` is embedded as it is.
    public static func encode(_ value: some Encodable) throws(JSONEncodingError) -> String {
        let root = CanonicalEncoder.Node()
        do {
            try CanonicalEncoder.encode(value, into: root, at: nil)
        } catch let error as JSONEncodingError {
            throw error
        } catch {
            throw JSONEncodingError(path: "", problem: "\(error)")
        }
        return root.text
    }

    /// ``encode(_:)`` as a ``JSONText``, without reading the text back: what this writer writes
    /// is one JSON value by construction (its numbers and embedded texts were checked when they
    /// were made).
    public static func encodeText(_ value: some Encodable) throws(JSONEncodingError) -> JSONText {
        JSONText(written: try encode(value))
    }
}

/// JSON text kept exactly as it was written, for ``JSONWriter/encode(_:)`` to embed unchanged:
/// a document whose bytes must not change, such as a final invoice stored under its hash.
public struct JSONText: Sendable, Hashable, Encodable {
    public let text: String

    /// Checks that `text` is one JSON value; it is kept as it is, not rewritten.
    public init(_ text: String) throws(JSONSyntaxError) {
        _ = try JSONParser.parse(text)
        self.text = text
    }

    /// Text ``JSONWriter`` wrote.
    init(written text: String) { self.text = text }

    /// Text assembled from ``JSONWriter``'s pieces (``JSONWriter/appendQuoted(_:to:)``, integers,
    /// texts of this type) in the canonical form, kept without being read back: for a document
    /// written member by member on a hot path, whose tests compare it with ``JSONWriter/encode(_:)``.
    public init(assembled text: String) { self.text = text }

    /// Only ``JSONWriter`` embeds JSON text; any other encoder is refused.
    public func encode(to encoder: any Encoder) throws {
        throw EncodingError.invalidValue(
            text, .init(codingPath: encoder.codingPath, debugDescription: "JSONText is embedded by JSONWriter only"))
    }
}

/// Why a value could not be written as JSON: where (a dotted coding path) and why.
public struct JSONEncodingError: Error, Sendable, Hashable, CustomStringConvertible {
    public let path: String
    public let problem: String

    public var description: String { path.isEmpty ? problem : "\(path): \(problem)" }
}
