import TallyCore

/// The row a preparation thread encodes ahead for the SQLite writer, and the rows it makes of
/// it when some of the batch's events turn out to be stored.
extension AggregateLogCodec {
    /// A batch's sectioned row (what SQLite ledgers write), encoded ahead on a preparation
    /// thread (``LedgerSpeculation``) as the bytes the writer inserts, so that the writer neither
    /// encodes it nor assembles it from sections, and a batch in flight holds one array.
    package struct Sections: Sendable {
        private let whole: [UInt8]
        /// Each tenant's section in ``whole``: its cell count and its bytes.
        private let directory: [Entry]

        struct Entry: Sendable {
            var tenant: String
            var cells: Int
            var bytes: Range<Int>
        }

        package init(_ cells: AggregateCells) {
            let encoded = compactSections(of: cells)
            whole = AggregateLogCodec.row(of: encoded.slices, fields: .compact)
            // The sections end the row, after the marker and the directory, as they are in
            // `encoded.bytes`.
            let offset = whole.count - encoded.bytes.count
            directory = encoded.sections.map {
                Entry(tenant: $0.tenant, cells: $0.cells, bytes: ($0.bytes.lowerBound + offset)..<($0.bytes.upperBound + offset))
            }
        }

        /// The row when the cells are the ones it was encoded from (`changed` empty: no event's
        /// key was stored); otherwise the row of `cells`, whose tenants outside `changed` have
        /// the cells the row was encoded from: their sections are copied, and only the changed
        /// tenants' are encoded afresh (a tenant left with no cell goes). A batch with a few
        /// events found stored — almost every batch of a workload with client retries — costs
        /// the writer a copy of the row, not its encoding.
        package func row(changing changed: Set<String>, to cells: AggregateCells) -> [UInt8] {
            guard !changed.isEmpty else { return whole }
            // A few tenants change: comparing a cell's tenant with each (small strings compare
            // in place) is cheaper than hashing it.
            let few = changed.count <= 8 ? Array(changed) : nil
            func isChanged(_ tenant: String) -> Bool { few.map { $0.contains(tenant) } ?? changed.contains(tenant) }
            let fresh = compactSections(of: cells, including: isChanged)
            var kept: [(tenant: String, cells: Int, bytes: ArraySlice<UInt8>)] = []
            kept.reserveCapacity(directory.count + fresh.sections.count)
            for entry in directory where !isChanged(entry.tenant) { kept.append((entry.tenant, entry.cells, whole[entry.bytes])) }
            kept.append(contentsOf: fresh.slices)
            return AggregateLogCodec.row(of: kept, fields: .compact)
        }
    }
}
