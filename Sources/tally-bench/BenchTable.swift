import Foundation

/// Every benchmark's figures, printed as one table: a header of named columns, then one row per
/// figure (missing cells print as "-"). Each row is also echoed to stderr as it is measured, so a
/// long run shows progress and a failed one still shows what it measured.
struct BenchTable {
    let columns: [(name: String, width: Int)]
    let echo: Bool
    private(set) var rows: [[String]] = []

    init(columns: [(name: String, width: Int)], echo: Bool = true) {
        self.columns = columns
        self.echo = echo
    }

    /// figure | unit | value | baseline.
    static func figures(echo: Bool = true) -> BenchTable {
        BenchTable(columns: [("figure", 66), ("unit", 10), ("value", 14), ("baseline", 0)], echo: echo)
    }

    /// figure | measured | baseline (same run) | ratio or target.
    static func cluster() -> BenchTable {
        BenchTable(columns: [("figure", 64), ("measured", 24), ("baseline (same run)", 24), ("ratio / target", 0)])
    }

    mutating func add(_ cells: String...) {
        let row = (0..<columns.count).map { $0 < cells.count ? cells[$0] : "-" }
        rows.append(row)
        if echo { FileHandle.standardError.write(Data("  \(row[0]): \(row.dropFirst().prefix(2).joined(separator: " "))\n".utf8)) }
    }

    func print() {
        Swift.print(line(columns.map(\.name)))
        for row in rows { Swift.print(line(row)) }
        appendMarkdown()
    }

    /// With `TALLY_BENCH_MARKDOWN=FILE` (set by `make bench`), the rows are also appended to FILE
    /// as rows of one markdown table — bench | figure | value | unit | baseline (same run) or
    /// target — so every benchmark's figures end up in one table (`bench/RESULTS.md`).
    private func appendMarkdown() {
        guard let path = ProcessInfo.processInfo.environment["TALLY_BENCH_MARKDOWN"], !path.isEmpty else { return }
        let bench = CommandLine.arguments.dropFirst().first ?? "-"
        var text = ""
        for row in rows {
            let cells: [String]
            if columns.count == 4, columns[1].name == "unit" {
                cells = [bench, row[0], row[2], row[1], row[3]]
            } else {
                // figure | measured | baseline | ratio: the value carries its unit.
                let baseline = row.dropFirst(2).filter { $0 != "-" }.joined(separator: "; ")
                cells = [bench, row[0], row.count > 1 ? row[1] : "-", "", baseline.isEmpty ? "-" : baseline]
            }
            text += "| " + cells.map(Self.markdownCell).joined(separator: " | ") + " |\n"
        }
        guard let handle = FileHandle(forWritingAtPath: path) else {
            FileHandle.standardError.write(Data("cannot append to \(path)\n".utf8))
            return
        }
        defer { try? handle.close() }
        _ = try? handle.seekToEnd()
        try? handle.write(contentsOf: Data(text.utf8))
    }

    private static func markdownCell(_ cell: String) -> String {
        cell.trimmingCharacters(in: .whitespaces).replacingOccurrences(of: "|", with: "\\|")
    }

    private func line(_ cells: [String]) -> String {
        zip(cells, columns).map { cell, column in column.width > 0 ? pad(cell, column.width) : cell }.joined()
    }
}
