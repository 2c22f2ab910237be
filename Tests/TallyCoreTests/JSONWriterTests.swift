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
