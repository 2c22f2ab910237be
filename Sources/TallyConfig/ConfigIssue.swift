/// One problem in a config file (pricing, collector or agent).
public struct ConfigIssue: Sendable, Hashable, CustomStringConvertible {
    /// The path to the offending value: keys joined by `.`, list indexes in brackets, 0-based.
    /// Empty for the whole document.
    public let place: String
    public let problem: String
    /// 1-based line and column of the offending YAML node, when known.
    public let line: Int?
    public let column: Int?

    public init(place: String, problem: String, line: Int? = nil, column: Int? = nil) {
        self.place = place
        self.problem = problem
        self.line = line
        self.column = column
    }

    public var description: String { place.isEmpty ? problem : "\(place): \(problem)" }
}

/// Every problem found in a config file, each with the file, the place in the document, its line
/// and column when known, and the problem; all at once, in document order.
public struct ConfigError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The file name as given to the loader (or `<string>` for text).
    public let file: String
    public let issues: [ConfigIssue]

    public init(file: String, issues: [ConfigIssue]) {
        self.file = file
        self.issues = issues
    }

    /// One line per issue: `pricing.yaml:12:9: plans[1].charges[0].tiers[2].up_to: …`.
    public var description: String {
        issues.map { issue in
            let position = issue.line.map { ":\($0):\(issue.column ?? 1)" } ?? ""
            let place = issue.place.isEmpty ? "" : " \(issue.place):"
            return "\(file)\(position):\(place) \(issue.problem)"
        }.joined(separator: "\n")
    }
}
