public import TallyCore

/// Walks a composed YAML tree and collects every problem with its place, line and column.
///
/// Scalars are read only as their source text (`YAMLNode.Scalar.string`), never through a YAML
/// library's typed resolution, so `0.001` reaches the decimal parser as the five characters the author
/// wrote and never becomes a binary `Double`.
public struct YAMLReader {
    public init() {}

    public private(set) var issues: [ConfigIssue] = []

    public mutating func fail(_ place: String, _ node: YAMLNode?, _ problem: String) {
        issues.append(ConfigIssue(place: place, problem: problem, line: node?.mark.line, column: node?.mark.column))
    }

    public static func child(_ place: String, _ key: String) -> String { place.isEmpty ? key : "\(place).\(key)" }
    public static func child(_ place: String, _ index: Int) -> String { "\(place)[\(index)]" }

    /// A mapping with string keys, checking that every key is one of `allowed`.
    public mutating func mapping(_ node: YAMLNode, _ place: String, allowed: [String]) -> Fields? {
        guard let mapping = node.mapping else {
            fail(place, node, "expected a mapping of keys (\(allowed.joined(separator: ", ")))")
            return nil
        }
        var values: [String: YAMLNode] = [:]
        for (key, value) in mapping {
            guard let name = key.scalar?.string else {
                fail(place, key, "keys must be plain text")
                continue
            }
            // YAML forbids a key twice in one mapping; taking either silently would run the
            // service with a value its operator may not have meant.
            if values[name] != nil {
                fail(Self.child(place, name), key, "'\(name)' is given twice")
                continue
            }
            if !allowed.contains(name) {
                fail(Self.child(place, name), key, "unknown key '\(name)'; expected one of: \(allowed.joined(separator: ", "))")
                continue
            }
            values[name] = value
        }
        return Fields(node: node, place: place, values: values)
    }

    /// A mapping of text keys to text values (e.g. metric -> meter name), each key once.
    public mutating func textMapping(_ node: YAMLNode, _ place: String) -> [String: String]? {
        guard let mapping = node.mapping else {
            fail(place, node, "expected a mapping of names to values")
            return nil
        }
        var result: [String: String] = [:]
        for (key, value) in mapping {
            guard let name = key.scalar?.string, !name.isEmpty else {
                fail(place, key, "keys must be plain text")
                continue
            }
            if result[name] != nil {
                fail(Self.child(place, name), key, "'\(name)' is given twice")
                continue
            }
            if let text = text(value, Self.child(place, name)) { result[name] = text }
        }
        return result
    }

    public mutating func list(_ node: YAMLNode, _ place: String) -> [YAMLNode]? {
        guard let sequence = node.sequence else {
            fail(place, node, "expected a list")
            return nil
        }
        return Array(sequence)
    }

    public mutating func text(_ node: YAMLNode, _ place: String) -> String? {
        guard let scalar = node.scalar else {
            fail(place, node, "expected a single value, not a list or mapping")
            return nil
        }
        if scalar.string.isEmpty || (scalar.style == .plain && ["~", "null", "Null", "NULL"].contains(scalar.string)) {
            fail(place, node, "must not be empty")
            return nil
        }
        return scalar.string
    }

    /// A name: a letter, then letters, digits, `_`, `.`, `:` or `-` (as metric names in events).
    public mutating func name(_ node: YAMLNode, _ place: String) -> String? {
        guard let value = text(node, place) else { return nil }
        var first = true
        for byte in value.utf8 {
            let letter = (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
            let other = (byte >= 0x30 && byte <= 0x39) || byte == 0x5F || byte == 0x2E || byte == 0x3A || byte == 0x2D
            if !(letter || (!first && other)) || value.utf8.count > 64 {
                fail(place, node, "'\(value)' is not a valid name (a letter, then letters, digits, '_', '.', ':' or '-'; at most 64 bytes)")
                return nil
            }
            first = false
        }
        return value
    }

    public mutating func quantity(_ node: YAMLNode, _ place: String) -> Quantity? {
        guard let value = text(node, place) else { return nil }
        do throws(QuantityError) {
            let quantity = try Quantity(parsing: value)
            if quantity.nanos < 0 {
                fail(place, node, "must not be negative (got \(value))")
                return nil
            }
            return quantity
        } catch {
            fail(place, node, error.description)
            return nil
        }
    }

    public mutating func time(_ node: YAMLNode, _ place: String) -> EventTime? {
        guard let value = text(node, place) else { return nil }
        do throws(TimestampError) {
            return try EventTime(parsing: value)
        } catch {
            fail(place, node, error.description)
            return nil
        }
    }

    public mutating func duration(_ node: YAMLNode, _ place: String) -> Duration? {
        guard let value = text(node, place) else { return nil }
        do throws(DurationText.ParseError) {
            return try DurationText.parse(value)
        } catch {
            fail(place, node, error.description)
            return nil
        }
    }

    public mutating func integer(_ node: YAMLNode, _ place: String, range: ClosedRange<Int>) -> Int? {
        guard let value = text(node, place) else { return nil }
        guard let number = Int(value), range.contains(number) else {
            fail(place, node, "'\(value)' must be a whole number from \(range.lowerBound) to \(range.upperBound)")
            return nil
        }
        return number
    }

    public mutating func flag(_ node: YAMLNode, _ place: String) -> Bool? {
        guard let value = text(node, place) else { return nil }
        switch value {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default:
            fail(place, node, "'\(value)' must be true or false")
            return nil
        }
    }

    /// A list of names, or one name.
    public mutating func names(_ node: YAMLNode, _ place: String) -> [String]? {
        if node.scalar != nil { return name(node, place).map { [$0] } }
        guard let items = list(node, place) else { return nil }
        var result: [String] = []
        for (index, item) in items.enumerated() {
            if let value = name(item, Self.child(place, index)) { result.append(value) }
        }
        return result
    }

    /// A list of texts, or one text.
    public mutating func texts(_ node: YAMLNode, _ place: String) -> [String]? {
        if node.scalar != nil { return text(node, place).map { [$0] } }
        guard let items = list(node, place) else { return nil }
        var result: [String] = []
        for (index, item) in items.enumerated() {
            if let value = text(item, Self.child(place, index)) { result.append(value) }
        }
        return result
    }
}

/// The values of one mapping, by key, with the mapping's place for messages.
public struct Fields {
    public let node: YAMLNode
    public let place: String
    public let values: [String: YAMLNode]

    public subscript(key: String) -> YAMLNode? { values[key] }

    public func place(_ key: String) -> String { YAMLReader.child(place, key) }

    /// The value of a required key, or an issue placed at the missing key.
    public func required(_ key: String, _ reader: inout YAMLReader) -> YAMLNode? {
        if let value = values[key] { return value }
        reader.fail(place(key), node, "is required")
        return nil
    }
}
