internal import CLibYAML

/// One YAML document as a tree of mappings, sequences and scalars, each with where it starts.
///
/// Built from the events of libyaml (Debian's `libyaml-dev`), the C parser most YAML libraries
/// wrap. Not Yams: Yams imports Foundation, and Foundation with its ICU data is about 6 MiB of
/// every agent's resident memory, a third of the agent's budget. Tally reads its config files
/// (agent, collector, pricing) only as source text through ``YAMLReader``, so it needs the tree and
/// nothing of a YAML library's typed decoding.
public struct YAMLNode: Sendable {
    /// Where a node starts in the source text, 1-based as editors count.
    public struct Mark: Sendable, Equatable {
        public let line: Int
        public let column: Int

        public init(line: Int, column: Int) {
            self.line = line
            self.column = column
        }
    }

    public enum ScalarStyle: Sendable {
        case plain, singleQuoted, doubleQuoted, literal, folded
    }

    /// A scalar's text exactly as written (after YAML's quoting and folding rules) and its style:
    /// `null` is null only when plain.
    public struct Scalar: Sendable {
        public let string: String
        public let style: ScalarStyle
    }

    public enum Content: Sendable {
        case scalar(Scalar)
        case sequence([YAMLNode])
        case mapping([(key: YAMLNode, value: YAMLNode)])
    }

    public let content: Content
    public let mark: Mark

    public init(_ content: Content, mark: Mark) {
        self.content = content
        self.mark = mark
    }

    public var scalar: Scalar? {
        if case .scalar(let scalar) = content { return scalar }
        return nil
    }

    public var sequence: [YAMLNode]? {
        if case .sequence(let items) = content { return items }
        return nil
    }

    public var mapping: [(key: YAMLNode, value: YAMLNode)]? {
        if case .mapping(let pairs) = content { return pairs }
        return nil
    }
}

/// Why a text is not one YAML document, with the place libyaml names.
public struct YAMLSyntaxError: Error, Sendable, CustomStringConvertible {
    public let problem: String
    public let line: Int?
    public let column: Int?

    public var description: String {
        guard let line, let column else { return problem }
        return "line \(line), column \(column): \(problem)"
    }
}

extension YAMLNode {
    /// The deepest nesting of mappings and sequences a document may have. Configs nest three or
    /// four levels; a limit keeps a hostile file from building a tree whose release recurses
    /// deeper than a thread's stack.
    public static let maxDepth = 64

    /// The most nodes a document may have, counting each alias as a copy of what it names: a
    /// "billion laughs" document of nested aliases is refused instead of read.
    public static let maxNodes = 1_000_000

    /// The single document of `text`, or nil when the text holds no document (empty, or only
    /// comments). Tags are ignored: every scalar is kept as its text.
    public static func compose(_ text: String) throws(YAMLSyntaxError) -> YAMLNode? {
        var bytes = Array(text.utf8)
        // libyaml asserts a non-null input; an empty array may have no address.
        if bytes.isEmpty { bytes.append(0x0A) }
        let parsed = bytes.withUnsafeBufferPointer { input in
            var parser = yaml_parser_t()
            guard yaml_parser_initialize(&parser) == 1 else {
                return Result<YAMLNode?, YAMLSyntaxError>.failure(YAMLSyntaxError(problem: "out of memory", line: nil, column: nil))
            }
            defer { yaml_parser_delete(&parser) }
            yaml_parser_set_input_string(&parser, input.baseAddress, input.count)
            var builder = TreeBuilder()
            while true {
                var event = yaml_event_t()
                guard yaml_parser_parse(&parser, &event) == 1 else { return .failure(Self.parserError(parser)) }
                defer { yaml_event_delete(&event) }
                do throws(YAMLSyntaxError) {
                    if try builder.take(event) { return .success(builder.root) }
                } catch {
                    return .failure(error)
                }
            }
        }
        return try parsed.get()
    }

    private static func parserError(_ parser: yaml_parser_t) -> YAMLSyntaxError {
        var problem = parser.problem.map { String(cString: $0) } ?? "unreadable YAML"
        if let context = parser.context { problem += " \(String(cString: context))" }
        let mark = parser.problem_mark
        return YAMLSyntaxError(problem: problem, line: Int(mark.line) + 1, column: Int(mark.column) + 1)
    }
}

/// Turns libyaml's events into a ``YAMLNode`` tree, without recursion.
private struct TreeBuilder {
    private enum Open {
        case sequence(items: [YAMLNode])
        case mapping(pairs: [(key: YAMLNode, value: YAMLNode)], key: YAMLNode?)
    }

    private struct Frame {
        var open: Open
        let mark: YAMLNode.Mark
        let anchor: String?
        /// ``nodes`` when the collection opened, to size it for the aliases that name it.
        let nodesBefore: Int
    }

    private var stack: [Frame] = []
    private var anchors: [String: (node: YAMLNode, size: Int)] = [:]
    private var nodes = 0
    private var documents = 0
    private(set) var root: YAMLNode?

    /// Takes one event; true at the end of the stream.
    mutating func take(_ event: yaml_event_t) throws(YAMLSyntaxError) -> Bool {
        let mark = YAMLNode.Mark(line: Int(event.start_mark.line) + 1, column: Int(event.start_mark.column) + 1)
        switch event.type {
        case YAML_STREAM_END_EVENT:
            return true
        case YAML_DOCUMENT_START_EVENT:
            documents += 1
            if documents > 1 { throw YAMLSyntaxError(problem: "expected one YAML document, found a second", line: mark.line, column: mark.column) }
        case YAML_SCALAR_EVENT:
            let scalar = event.data.scalar
            let text = scalar.value.map { String(decoding: UnsafeBufferPointer(start: $0, count: Int(scalar.length)), as: UTF8.self) } ?? ""
            let node = YAMLNode(.scalar(.init(string: text, style: Self.style(scalar.style))), mark: mark)
            try count(1, at: mark)
            if let anchor = Self.text(scalar.anchor) { anchors[anchor] = (node, 1) }
            try add(node)
        case YAML_ALIAS_EVENT:
            guard let name = Self.text(event.data.alias.anchor), let named = anchors[name] else {
                throw YAMLSyntaxError(problem: "unknown alias", line: mark.line, column: mark.column)
            }
            try count(named.size, at: mark)
            try add(named.node)
        case YAML_SEQUENCE_START_EVENT:
            try open(.sequence(items: []), mark: mark, anchor: Self.text(event.data.sequence_start.anchor))
        case YAML_MAPPING_START_EVENT:
            try open(.mapping(pairs: [], key: nil), mark: mark, anchor: Self.text(event.data.mapping_start.anchor))
        case YAML_SEQUENCE_END_EVENT, YAML_MAPPING_END_EVENT:
            guard let frame = stack.popLast() else { break }
            let node: YAMLNode
            switch frame.open {
            case .sequence(let items): node = YAMLNode(.sequence(items), mark: frame.mark)
            case .mapping(let pairs, _): node = YAMLNode(.mapping(pairs), mark: frame.mark)
            }
            if let anchor = frame.anchor { anchors[anchor] = (node, nodes - frame.nodesBefore) }
            try add(node)
        default:
            break
        }
        return false
    }

    private mutating func open(_ open: Open, mark: YAMLNode.Mark, anchor: String?) throws(YAMLSyntaxError) {
        if stack.count >= YAMLNode.maxDepth {
            throw YAMLSyntaxError(problem: "nested deeper than \(YAMLNode.maxDepth) levels", line: mark.line, column: mark.column)
        }
        stack.append(Frame(open: open, mark: mark, anchor: anchor, nodesBefore: nodes))
        try count(1, at: mark)
    }

    private mutating func count(_ added: Int, at mark: YAMLNode.Mark) throws(YAMLSyntaxError) {
        nodes += added
        if nodes > YAMLNode.maxNodes {
            throw YAMLSyntaxError(
                problem: "more than \(YAMLNode.maxNodes) values once aliases are expanded", line: mark.line, column: mark.column)
        }
    }

    private mutating func add(_ node: YAMLNode) throws(YAMLSyntaxError) {
        guard var frame = stack.popLast() else {
            root = node
            return
        }
        switch frame.open {
        case .sequence(var items):
            frame.open = .sequence(items: [])
            items.append(node)
            frame.open = .sequence(items: items)
        case .mapping(var pairs, let key):
            frame.open = .mapping(pairs: [], key: nil)
            if let key {
                pairs.append((key, node))
                frame.open = .mapping(pairs: pairs, key: nil)
            } else {
                frame.open = .mapping(pairs: pairs, key: node)
            }
        }
        stack.append(frame)
    }

    private static func style(_ style: yaml_scalar_style_t) -> YAMLNode.ScalarStyle {
        switch style {
        case YAML_SINGLE_QUOTED_SCALAR_STYLE: .singleQuoted
        case YAML_DOUBLE_QUOTED_SCALAR_STYLE: .doubleQuoted
        case YAML_LITERAL_SCALAR_STYLE: .literal
        case YAML_FOLDED_SCALAR_STYLE: .folded
        default: .plain
        }
    }

    private static func text(_ pointer: UnsafeMutablePointer<yaml_char_t>?) -> String? {
        pointer.map { String(cString: $0) }
    }
}
