import Testing
@testable import TallyCore

@Suite struct EventDecoderTests {
    let now = EventTime(microseconds: 1_776_081_600_000_000)  // 2026-04-13T12:00:00Z

    @Test func decodesTheBriefsEvent() throws {
        let event = try decodeOne(
            #"{"tenant": "acme", "metric": "api_calls", "quantity": 1, "timestamp": "2026-04-13T12:00:00Z", "id": "req-7f3a", "properties": {"endpoint": "/api/v1/search", "region": "eu"}}"#
        ).get()
        #expect(event.tenant == "acme")
        #expect(event.metric == "api_calls")
        #expect(event.quantity == Quantity(1))
        #expect(event.timestamp == now)
        #expect(event.id == "req-7f3a")
        #expect(event.properties.map(\.key) == ["endpoint", "region"])
    }

    /// `forEachLine` gives every non-blank line once, in order, without its "\r\n" or "\n": on
    /// the edge cases and on random buffers (lines of every length, so that newlines fall at
    /// every offset of the wide reads memchr makes), against a plain split of the same bytes.
    @Test func linesAreSplitAsAPlainSplitWould() {
        func lines(_ bytes: [UInt8]) -> [[UInt8]] {
            var found: [[UInt8]] = []
            bytes.withUnsafeBufferPointer { buffer in forEachLine(buffer) { found.append(Array($0)) } }
            return found
        }
        func reference(_ bytes: [UInt8]) -> [[UInt8]] {
            bytes.split(separator: 0x0A, omittingEmptySubsequences: false).map { line in
                line.last == 0x0D ? Array(line.dropLast()) : Array(line)
            }.filter { line in line.contains { $0 != 0x20 && $0 != 0x09 } }
        }
        #expect(lines([]).isEmpty)
        #expect(lines(Array("\n\n \t\r\n".utf8)).isEmpty)
        #expect(lines(Array("a\r\n\n  \nb\nc".utf8)) == [Array("a".utf8), Array("b".utf8), Array("c".utf8)])
        #expect(lines(Array("x".utf8)) == [Array("x".utf8)])
        var random = SplitMix64(seed: 71)
        for _ in 0..<300 {
            var bytes: [UInt8] = []
            for _ in 0..<Int(random.next() % 12) {
                let length = Int(random.next() % 150)
                let choices: [UInt8] = [0x61, 0x20, 0x09, 0x0D, 0x7B]
                bytes += (0..<length).map { _ in choices[Int(random.next() % UInt64(choices.count))] }
                if random.next() % 5 != 0 { bytes.append(0x0A) }
            }
            #expect(lines(bytes) == reference(bytes), "\(bytes)")
        }
    }

    @Test func decodesTheSeedsEventWithTheDefaultMetric() throws {
        let event = try decodeOne(
            #"{ "user_id": "123", "endpoint": "/api/v1/search", "units": 1, "timestamp": "2026-04-13T12:00:00Z"}"#,
            defaultMetric: "api_calls"
        ).get()
        #expect(event.tenant == "123")
        #expect(event.metric == "api_calls")
        #expect(event.properties["endpoint"] == "/api/v1/search")
        let noDefault = decodeOne(#"{"user_id":"123","units":1,"timestamp":"2026-04-13T12:00:00Z"}"#)
        #expect(noDefault.error?.reason == .missingField)
        #expect(noDefault.error?.field == "metric")
    }

    @Test func jsonLineRoundTrips() throws {
        let event = decodeOne(
            #"{"tenant":"a\"b\\c\n","metric":"m","quantity":"0.25","timestamp":"2026-04-13T12:00:00.000001Z","id":"é","properties":{"k":"v\u0001"}}"#
        )
        #expect(event.error?.field == "tenant")  // control characters are refused in tenants
        let clean = try decodeOne(
            #"{"tenant":"a\"b\\c","metric":"m","quantity":"0.25","timestamp":"2026-04-13T12:00:00.000001Z","id":"é","properties":{"k":"v w"}}"#
        ).get()
        #expect(try decodeOne(clean.jsonLine).get() == clean)
    }

    @Test func arrayAndNDJSONGiveOneResultPerEventInOrder() {
        let good = #"{"tenant":"t","metric":"m","quantity":1,"timestamp":"2026-04-13T12:00:00Z"}"#
        let bad = #"{"tenant":"t","metric":"m","quantity":-1,"timestamp":"2026-04-13T12:00:00Z"}"#
        let decoder = EventDecoder()
        let array = decoder.decodeBody(Array("[\(good),\(bad),\(good)]".utf8), now: now)
        #expect(array.map { $0.value != nil } == [true, false, true])
        let ndjson = decoder.decodeBody(Array("\(good)\n\(bad)\r\n\n{not json\n\(good)".utf8), now: now)
        #expect(ndjson.map { $0.value != nil } == [true, false, false, true])
        #expect(ndjson[2].error?.reason == .malformed)
        let pretty = decoder.decodeBody(
            Array("{\n  \"tenant\": \"t\",\n  \"metric\": \"m\",\n  \"quantity\": 1,\n  \"timestamp\": \"2026-04-13T12:00:00Z\"\n}\n".utf8), now: now)
        #expect(pretty.count == 1 && pretty[0].value != nil)
        #expect(decoder.decodeBody(Array("  \n ".utf8), now: now).isEmpty)
        #expect(decoder.decodeBody(Array("[1,".utf8), now: now).first?.error?.reason == .malformed)
    }

    @Test(
        arguments: [
            (#"{"metric":"m","quantity":1,"timestamp":"2026-04-13T12:00:00Z"}"#, RejectionReason.missingField, "tenant"),
            (#"{"tenant":"t","metric":"m","timestamp":"2026-04-13T12:00:00Z"}"#, .missingField, "quantity"),
            (#"{"tenant":"t","metric":"m","quantity":1}"#, .missingField, "timestamp"),
            (#"{"tenant":"","metric":"m","quantity":1,"timestamp":"2026-04-13T12:00:00Z"}"#, .invalidField, "tenant"),
            (#"{"tenant":7,"metric":"m","quantity":1,"timestamp":"2026-04-13T12:00:00Z"}"#, .invalidField, "tenant"),
            (#"{"tenant":"t","metric":"9m","quantity":1,"timestamp":"2026-04-13T12:00:00Z"}"#, .invalidField, "metric"),
            (#"{"tenant":"t","metric":"a b","quantity":1,"timestamp":"2026-04-13T12:00:00Z"}"#, .invalidField, "metric"),
            (#"{"tenant":"t","metric":"m","quantity":-1,"timestamp":"2026-04-13T12:00:00Z"}"#, .invalidField, "quantity"),
            (#"{"tenant":"t","metric":"m","quantity":"lots","timestamp":"2026-04-13T12:00:00Z"}"#, .invalidField, "quantity"),
            (#"{"tenant":"t","metric":"m","quantity":0.0000000001,"timestamp":"2026-04-13T12:00:00Z"}"#, .invalidField, "quantity"),
            (#"{"tenant":"t","metric":"m","quantity":1e16,"timestamp":"2026-04-13T12:00:00Z"}"#, .limitExceeded, "quantity"),
            (#"{"tenant":"t","metric":"m","quantity":1e40,"timestamp":"2026-04-13T12:00:00Z"}"#, .limitExceeded, "quantity"),
            (#"{"tenant":"t","metric":"m","quantity":true,"timestamp":"2026-04-13T12:00:00Z"}"#, .invalidField, "quantity"),
            (#"{"tenant":"t","metric":"m","quantity":1,"timestamp":"2026-04-13 12:00"}"#, .invalidField, "timestamp"),
            (#"{"tenant":"t","metric":"m","quantity":1,"timestamp":1776081600}"#, .invalidField, "timestamp"),
            (#"{"tenant":"t","metric":"m","quantity":1,"timestamp":"2026-04-13T12:06:00Z"}"#, .futureTimestamp, "timestamp"),
            (#"{"tenant":"t","metric":"m","quantity":1,"timestamp":"2026-04-13T12:00:00Z","colour":"red"}"#, .unknownField, "colour"),
            (#"{"tenant":"t","tenant":"u","metric":"m","quantity":1,"timestamp":"2026-04-13T12:00:00Z"}"#, .invalidField, "tenant"),
            (#"{"tenant":"t","metric":"m","quantity":1,"timestamp":"2026-04-13T12:00:00Z","properties":[]}"#, .invalidField, "properties"),
            (#"{"tenant":"t","metric":"m","quantity":1,"timestamp":"2026-04-13T12:00:00Z","properties":{"a":null}}"#, .invalidField, "properties.a"),
            (
                #"{"tenant":"t","metric":"m","quantity":1,"timestamp":"2026-04-13T12:00:00Z","properties":{"a":{"b":1}}}"#, .invalidField,
                "properties.a"
            ),
            (
                #"{"tenant":"t","metric":"m","quantity":1,"timestamp":"2026-04-13T12:00:00Z","properties":{"bad key":"x"}}"#, .invalidField,
                "properties.bad key"
            ),
            (#"{"tenant":"t","metric":"m","quantity":1,"timestamp":"2026-04-13T12:00:00Z","id":""}"#, .invalidField, "id"),
            (#"[1]"#, .malformed, nil),
        ] as [(String, RejectionReason, String?)])
    func rejectsWithTheFieldAndReason(_ json: String, _ reason: RejectionReason, _ field: String?) {
        let result = decodeOne(json, now: now)
        #expect(result.error?.reason == reason, "\(result)")
        #expect(result.error?.field == field, "\(result)")
    }

    @Test func limitsAreEnforced() {
        let longTenant = String(repeating: "x", count: 129)
        let r1 = decodeOne(#"{"tenant":"\#(longTenant)","metric":"m","quantity":1,"timestamp":"2026-04-13T12:00:00Z"}"#, now: now)
        #expect(r1.error?.reason == .limitExceeded)
        let props = (0..<33).map { "\"k\($0)\":\"v\"" }.joined(separator: ",")
        let r2 = decodeOne(#"{"tenant":"t","metric":"m","quantity":1,"timestamp":"2026-04-13T12:00:00Z","properties":{\#(props)}}"#, now: now)
        #expect(r2.error?.reason == .limitExceeded)
        #expect(r2.error?.field == "properties")
        let longValue = String(repeating: "v", count: 257)
        let r3 = decodeOne(
            #"{"tenant":"t","metric":"m","quantity":1,"timestamp":"2026-04-13T12:00:00Z","properties":{"k":"\#(longValue)"}}"#, now: now)
        #expect(r3.error?.reason == .limitExceeded)
        let atLimit = String(repeating: "x", count: 128)
        #expect(decodeOne(#"{"tenant":"\#(atLimit)","metric":"m","quantity":1,"timestamp":"2026-04-13T12:00:00Z"}"#, now: now).value != nil)
    }

    @Test func futureSkewIsConfigurable() {
        var limits = EventLimits()
        limits.maxFutureSkew = .seconds(3600)
        let decoder = EventDecoder(limits: limits)
        let json = #"{"tenant":"t","metric":"m","quantity":1,"timestamp":"2026-04-13T12:30:00Z"}"#
        #expect(decoder.decodeBody(Array(json.utf8), now: now).first?.value != nil)
        #expect(EventDecoder().decodeBody(Array(json.utf8), now: now).first?.error?.reason == .futureTimestamp)
    }
}

@Suite struct JSONParserTests {
    @Test(arguments: [
        "", "{", "{\"a\":}", "{\"a\":1,}", "[1,]", "[01]", "[1.]", "[.5]", "[+1]", "[\"\\x\"]", "[\"\u{01}\"]",
        "[\"\\ud800\"]", "[\"\\udc00\"]", "[tru]", "{\"a\" 1}", "[1] [2]", "{'a':1}", "[NaN]", "[\"abc",
    ])
    func refusesMalformedJSON(_ text: String) {
        #expect(throws: JSONSyntaxError.self) { try JSONParser.parse(text) }
    }

    @Test func refusesInvalidUTF8() {
        #expect(throws: JSONSyntaxError.self) { try JSONParser.parse([0x22, 0xC3, 0x28, 0x22] as [UInt8]) }
        #expect(throws: JSONSyntaxError.self) { try JSONParser.parse([0x22, 0xFF, 0x22] as [UInt8]) }
    }

    @Test func limitsNesting() throws {
        let deep = String(repeating: "[", count: 33) + String(repeating: "]", count: 33)
        #expect(throws: JSONSyntaxError.self) { try JSONParser.parse(deep) }
        let ok = String(repeating: "[", count: 32) + String(repeating: "]", count: 32)
        _ = try JSONParser.parse(ok)
    }

    @Test func parsesEscapesAndKeepsNumberLexemes() throws {
        let value = try JSONParser.parse(#"{"s":"a\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00","n":1.50e+2,"t":true,"f":false,"z":null,"a":[]}"#)
        guard case .object(let members) = value else {
            Issue.record("not an object")
            return
        }
        #expect(members.map(\.key) == ["s", "n", "t", "f", "z", "a"])
        #expect(members[0].value == .string("a\"\\/\u{08}\u{0C}\n\r\té😀"))
        #expect(members[1].value == .number("1.50e+2"))
        #expect(members[5].value == .array([]))
    }

    @Test func writerEscapesWhatTheParserReads() throws {
        let text = "quote\" back\\ nl\n ctl\u{01} é"
        #expect(try JSONParser.parse(JSONWriter.quoted(text)) == .string(text))
    }
}
