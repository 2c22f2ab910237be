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
    }

    private func line(_ cells: [String]) -> String {
        zip(cells, columns).map { cell, column in column.width > 0 ? pad(cell, column.width) : cell }.joined()
    }
}
