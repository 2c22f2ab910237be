import Testing
@testable import TallyCore

/// Tally's one JSON writer: its output is canonical (one value, one spelling), whatever order
/// the members were given or stored in.
@Suite struct JSONWriterTests {
    @Test func stringsAreEscapedAsRFC8785Does() {
        #expect(
            JSONWriter.quoted("a\"b\\c/\u{08}\u{0C}\n\r\t\u{01}\u{1F}\u{7F}é😀")
                == #""a\"b\\c/\b\f\n\r\t\u0001\u001f"# + "\u{7F}é😀\"")
        #expect(JSONWriter.quoted("") == "\"\"")
    }

    @Test func membersAreSortedByTheirKeysBytesAndTheLastOfARepeatedKeyWins() {
        let text = JSONWriter.object([
            (key: "b", value: "1"), (key: "\u{E9}", value: "2"), (key: "a", value: "3"), (key: "B", value: "4"), (key: "aa", value: "5"),
            (key: "", value: "6"), (key: "a", value: "7"), (key: "e\u{301}", value: "8"),
        ])
        // "e\u{301}" (65 CC 81) and "\u{E9}" (C3 A9) are equal Swift strings but two JSON keys.
        let expected = "{\"\":6,\"B\":4,\"a\":7,\"aa\":5,\"b\":1,\"e\u{301}\":8,\"\u{E9}\":2}"
        #expect(Array(text.utf8) == Array(expected.utf8))
        #expect(JSONWriter.object([]) == "{}")
        #expect(JSONWriter.array(["1", "\"x\"", "{}"]) == #"[1,"x",{}]"#)
    }

    @Test func parsedJSONIsWrittenCanonically() throws {
        let messy = #" { "b" : [ 1 , 2.50 , true, null ] , "a" : { "y" : "\u00e9\/" , "x" : -0 } } "#
        let canonical = JSONWriter.write(try JSONParser.parse(messy))
        #expect(canonical == #"{"a":{"x":-0,"y":"é/"},"b":[1,2.50,true,null]}"#)
        // Canonical text is a fixed point.
        #expect(JSONWriter.write(try JSONParser.parse(canonical)) == canonical)
    }

    struct Line: Encodable {
        var name: String
        var count: Int64
        var note: String?
        var flags: [Bool]
        var limits: [String: UInt8]
    }

    struct Document: Encodable {
        var zeta = "last"
        var alpha: [Line]
        var embedded: JSONText
    }

    @Test func encodablesAreWrittenCanonicallyAndDeterministically() throws {
        var forward: [String: UInt8] = [:]
        var backward: [String: UInt8] = [:]
        let keys = (0..<50).map { "k\($0)" }
        for (index, key) in keys.enumerated() { forward[key] = UInt8(index) }
        for (index, key) in keys.enumerated().reversed() { backward[key] = UInt8(index) }
        let embedded = try JSONText(#"{ "kept" : [1,  2] }"#)
        let first = Document(alpha: [Line(name: "x\ny", count: -7, note: nil, flags: [true, false], limits: forward)], embedded: embedded)
        let second = Document(alpha: [Line(name: "x\ny", count: -7, note: nil, flags: [true, false], limits: backward)], embedded: embedded)
        let text = try JSONWriter.encode(first)
        #expect(try JSONWriter.encode(second) == text)
        #expect(try JSONWriter.encode(first) == text)
        // Keys sorted (not in declaration order), nil left out, the JSON text embedded as it is.
        #expect(text.hasPrefix(#"{"alpha":[{"count":-7,"flags":[true,false],"limits":{"k0":0,"k1":1,"k10":10,"#))
        #expect(text.hasSuffix(#""name":"x\ny"}],"embedded":{ "kept" : [1,  2] },"zeta":"last"}"#))
        #expect(!text.contains("note"))
    }

    /// A ``JSONValue`` encoded through `Encodable` containers, member by member in the order
    /// given (repeated keys included), numbers as their text.
    struct Tree: Encodable {
        var value: JSONValue

        struct Key: CodingKey {
            var stringValue: String
            var intValue: Int? { nil }
            init(stringValue: String) { self.stringValue = stringValue }
            init?(intValue: Int) { nil }
        }

        func encode(to encoder: any Encoder) throws {
            switch value {
            case .object(let members):
                var container = encoder.container(keyedBy: Key.self)
                for member in members { try container.encode(Tree(value: member.value), forKey: Key(stringValue: member.key)) }
            case .array(let elements):
                var container = encoder.unkeyedContainer()
                for element in elements { try container.encode(Tree(value: element)) }
            case .string(let text):
                var container = encoder.singleValueContainer()
                try container.encode(text)
            case .number(let text):
                var container = encoder.singleValueContainer()
                try container.encode(try JSONText(text))
            case .bool(let flag):
                var container = encoder.singleValueContainer()
                try container.encode(flag)
            case .null:
                var container = encoder.singleValueContainer()
                try container.encodeNil()
            }
        }
    }

    /// The encoder writes a tree into one string; its text is, byte for byte, what the writer
    /// makes of the same value member by member (``JSONWriter/write(_:)``): keys sorted by
    /// their bytes, a repeated key's last member kept, escapes, nesting, empty containers.
    @Test func theEncodersTextIsTheWritersByteForByte() throws {
        var random = SplitMix64(seed: 17)
        let keys = ["a", "b", "B", "aa", "", "é", "e\u{301}", "q\"uote", "tab\t", "k10", "k2"]
        func tree(_ depth: Int) -> JSONValue {
            switch depth == 0 ? random.next() % 4 + 2 : random.next() % 6 {
            case 0: return .object((0..<Int(random.next() % 6)).map { _ in (keys[Int(random.next() % UInt64(keys.count))], tree(depth - 1)) })
            case 1: return .array((0..<Int(random.next() % 5)).map { _ in tree(depth - 1) })
            case 2: return .string(["", "x\ny", "é😀", "\u{01}", "plain"][Int(random.next() % 5)])
            case 3: return .number(["0", "-7", "2.50", "1e3"][Int(random.next() % 4)])
            case 4: return .bool(random.next() % 2 == 0)
            default: return .null
            }
        }
        for _ in 0..<300 {
            let value = JSONValue.object([("root", tree(5)), ("root", tree(4)), ("other", tree(5))])
            let encoded = try JSONWriter.encode(Tree(value: value))
            #expect(Array(encoded.utf8) == Array(JSONWriter.write(value).utf8))
        }
    }

    struct Priced: Encodable {
        var amount: Double
    }

    @Test func binaryFloatingPointAndMalformedEmbeddedTextAreRefused() {
        #expect(throws: JSONEncodingError.self) { try JSONWriter.encode(Priced(amount: 0.1)) }
        #expect(throws: JSONEncodingError.self) { try JSONWriter.encode([Float(1)]) }
        do throws(JSONEncodingError) {
            _ = try JSONWriter.encode(["prices": [Priced(amount: 1)]])
            Issue.record("a Double was written")
        } catch {
            #expect(error.path == "prices.[0].amount")
        }
        #expect(throws: JSONSyntaxError.self) { try JSONText("{\"a\":") }
        #expect(throws: JSONSyntaxError.self) { try JSONText("1 2") }
    }
}
