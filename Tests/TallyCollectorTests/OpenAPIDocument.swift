import Foundation
import TallyConfig

/// An OpenAPI document of `protocol/`, read with Tally's own YAML reader (``YAMLNode``): its
/// operations, and the checks of its inner consistency that need no server.
struct OpenAPIDocument {
    /// One operation: an HTTP method and a path template (`/v1/tenants/{tenant}/charges`).
    struct Operation: Hashable, Comparable, CustomStringConvertible {
        let method: String
        let path: String

        var description: String { "\(method) \(path)" }

        static func < (lhs: Operation, rhs: Operation) -> Bool { (lhs.path, lhs.method) < (rhs.path, rhs.method) }
    }

    static let methods = ["get", "put", "post", "delete", "options", "head", "patch", "trace"]

    let root: YAMLNode

    init(file: String) throws {
        let text = try String(contentsOfFile: file, encoding: .utf8)
        guard let root = try YAMLNode.compose(text) else { throw FixtureError("\(file) holds no YAML document") }
        self.root = root
    }

    /// The `openapi` version string.
    var version: String? { root["openapi"]?.scalar?.string }

    /// Every (method, path) under `paths`.
    var operations: Set<Operation> {
        var result: Set<Operation> = []
        for (key, item) in root["paths"]?.mapping ?? [] {
            guard let path = key.scalar?.string else { continue }
            for (name, _) in item.mapping ?? [] {
                guard let method = name.scalar?.string, Self.methods.contains(method) else { continue }
                result.insert(Operation(method: method.uppercased(), path: path))
            }
        }
        return result
    }

    /// Every `$ref` that does not name a node of this document, with where it is.
    var unresolvedReferences: [String] {
        var problems: [String] = []
        var stack = [root]
        while let node = stack.popLast() {
            switch node.content {
            case .scalar: break
            case .sequence(let items): stack += items
            case .mapping(let pairs):
                for (key, value) in pairs {
                    if key.scalar?.string == "$ref" {
                        let target = value.scalar?.string ?? ""
                        if resolve(target) == nil { problems.append("line \(value.mark.line): \(target)") }
                    } else {
                        stack.append(value)
                    }
                }
            }
        }
        return problems
    }

    /// Operations whose `in: path` parameters are not exactly the `{names}` of their path.
    var pathParameterMismatches: [String] {
        var problems: [String] = []
        for (key, item) in root["paths"]?.mapping ?? [] {
            guard let path = key.scalar?.string else { continue }
            let templated = Set(Self.templateNames(path))
            let shared = parameterNames(item["parameters"], in: "path")
            for (name, operation) in item.mapping ?? [] {
                guard let method = name.scalar?.string, Self.methods.contains(method) else { continue }
                let declared = shared.union(parameterNames(operation["parameters"], in: "path"))
                if declared != templated {
                    problems.append("\(method.uppercased()) \(path): path parameters \(declared.sorted()), template \(templated.sorted())")
                }
            }
        }
        return problems
    }

    /// Operations without a `responses` mapping, or with one that is empty.
    var operationsWithoutResponses: [Operation] {
        var result: [Operation] = []
        for (key, item) in root["paths"]?.mapping ?? [] {
            guard let path = key.scalar?.string else { continue }
            for (name, operation) in item.mapping ?? [] {
                guard let method = name.scalar?.string, Self.methods.contains(method) else { continue }
                if (operation["responses"]?.mapping ?? []).isEmpty { result.append(Operation(method: method.uppercased(), path: path)) }
            }
        }
        return result.sorted()
    }

    /// The node a local reference (`#/components/schemas/Error`) names, JSON-pointer escapes
    /// (`~1` for `/`, `~0` for `~`) undone.
    func resolve(_ reference: String) -> YAMLNode? {
        guard reference.hasPrefix("#/") else { return nil }
        var node = root
        for token in reference.dropFirst(2).split(separator: "/", omittingEmptySubsequences: false) {
            let key = token.replacingOccurrences(of: "~1", with: "/").replacingOccurrences(of: "~0", with: "~")
            guard let next = node[key] else { return nil }
            node = next
        }
        return node
    }

    /// The names of the parameters in `list` (inline or by reference) that are `in` `place`.
    private func parameterNames(_ list: YAMLNode?, in place: String) -> Set<String> {
        var names: Set<String> = []
        for item in list?.sequence ?? [] {
            let parameter = item["$ref"]?.scalar.flatMap { resolve($0.string) } ?? item
            if parameter["in"]?.scalar?.string == place, let name = parameter["name"]?.scalar?.string { names.insert(name) }
        }
        return names
    }

    /// The `{names}` of a path template, in order.
    static func templateNames(_ path: String) -> [String] {
        var names: [String] = []
        var current: String?
        for character in path {
            switch character {
            case "{": current = ""
            case "}":
                if let name = current { names.append(name) }
                current = nil
            default: current?.append(character)
            }
        }
        return names
    }
}

extension YAMLNode {
    /// The value of `key` in a mapping; nil for a scalar, a sequence or a missing key.
    fileprivate subscript(key: String) -> YAMLNode? {
        mapping?.first { $0.key.scalar?.string == key }?.value
    }
}
