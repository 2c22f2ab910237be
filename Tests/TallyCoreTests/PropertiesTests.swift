import Testing

@testable import TallyCore

/// `Properties`: unique keys in the byte order of their UTF-8 encodings (the canonical
/// encoding's and the fingerprint's order), whatever order they are set in, and a lookup that
/// finds each key whatever the number of properties.
@Suite struct PropertiesTests {
    /// Keys that order differently by bytes than by characters or by length: prefixes, upper
    /// case before lower, multi-byte characters after ASCII, the empty key.
    static let keys = ["", "a", "ab", "abc", "B", "b", "z", "é", "ü", "日本", "日", "zz", "A", "a b", "~", "\u{7F}", "0", "00"]

    @Test func keysAreUniqueAndInByteOrderWhateverTheOrderSet() {
        var generator = SystemRandomNumberGenerator()
        for size in [1, 2, 8, 9, Self.keys.count] {
            let chosen = Array(Self.keys.shuffled(using: &generator).prefix(size))
            for _ in 0..<20 {
                var pairs = chosen.shuffled(using: &generator).map { ($0, "v-\($0)") }
                // A later pair replaces an earlier one with the same key.
                if let first = pairs.first { pairs.append((first.0, "last")) }
                let properties = Properties(pairs)
                let expected = chosen.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
                #expect(properties.map { $0.key } == expected, "\(size)")
                for key in chosen { #expect(properties[key] == (key == pairs.first?.0 ? "last" : "v-\(key)")) }
                for key in Self.keys where !chosen.contains(key) { #expect(properties[key] == nil) }
            }
        }
    }

    /// Elements already in order make the same properties as setting them one by one; any pair
    /// out of byte order, or a repeated key, is refused.
    @Test func elementsInOrderAreTakenAsTheyAreAndOthersRefused() throws {
        let ordered = Self.keys.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
        let elements = ordered.map { Property(key: $0, value: "v-\($0)") }
        let properties = try #require(Properties(inOrder: elements))
        #expect(properties == Properties(ordered.map { ($0, "v-\($0)") }))
        #expect(Properties(inOrder: [])?.isEmpty == true)
        #expect(Properties(inOrder: [elements[0]])?.count == 1)
        for position in 1..<elements.count {
            var swapped = elements
            swapped.swapAt(position - 1, position)
            #expect(Properties(inOrder: swapped) == nil, "\(ordered[position - 1]) after \(ordered[position])")
            var repeated = elements
            repeated[position] = Property(key: ordered[position - 1], value: "again")
            #expect(Properties(inOrder: repeated) == nil, "\(ordered[position - 1]) twice")
        }
    }

    @Test func settingNilRemovesAKey() {
        var properties = Properties(Self.keys.map { ($0, $0) })
        properties["日本"] = nil
        properties["a"] = nil
        #expect(properties.count == Self.keys.count - 2)
        #expect(properties["日本"] == nil && properties["a"] == nil && properties["ab"] == "ab")
    }
}
