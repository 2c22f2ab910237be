import Foundation
import Testing
@testable import TallyCore

/// One vector of protocol/vectors/fingerprint.json, written by protocol/fingerprint_reference.py.
struct FingerprintVector: Decodable, CustomTestStringConvertible {
    let name: String
    let input: String
    let default_metric: String?
    let same_as: String?
    let canonical_hex: String
    let fingerprint: String
    var testDescription: String { name }
}

let fingerprintVectors: [FingerprintVector] = {
    let url = packageRoot.appendingPathComponent("protocol/vectors/fingerprint.json")
    guard let data = try? Data(contentsOf: url),
        let vectors = try? JSONDecoder().decode([FingerprintVector].self, from: data)
    else { return [] }
    return vectors
}()

@Suite struct FingerprintTests {
    @Test func vectorsAreLoaded() {
        #expect(fingerprintVectors.count >= 20)
    }

    @Test(arguments: fingerprintVectors)
    func vectorMatchesTheReferenceImplementation(_ vector: FingerprintVector) throws {
        let event = try decodeOne(vector.input, defaultMetric: vector.default_metric).get()
        let canonical = CanonicalEncoding.bytes(of: event)
        #expect(Hex.encode(canonical) == vector.canonical_hex)
        #expect(Fingerprint(of: event).description == vector.fingerprint)
    }

    @Test func vectorGroupsShareExactlyOneFingerprint() throws {
        var byGroup: [String: Set<String>] = [:]
        for vector in fingerprintVectors {
            let event = try decodeOne(vector.input, defaultMetric: vector.default_metric).get()
            byGroup[vector.same_as ?? vector.name, default: []].insert(Fingerprint(of: event).description)
        }
        #expect(byGroup.values.allSatisfy { $0.count == 1 })
        // Different groups are different events.
        let all = byGroup.values.compactMap(\.first)
        #expect(Set(all).count == byGroup.count)
    }

    static let base = UsageEvent(
        tenant: "acme", metric: "api_calls", quantity: Quantity(3), timestamp: EventTime(seconds: 1_776_081_600),
        id: nil, properties: Properties([("endpoint", "/a"), ("region", "eu")]))

    @Test func everyKeyFieldChangesTheFingerprintWithoutId() {
        let original = Fingerprint(of: Self.base)
        var variants: [UsageEvent] = []
        var e = Self.base
        e.tenant = "acme2"
        variants.append(e)
        e = Self.base
        e.metric = "api_calls2"
        variants.append(e)
        e = Self.base
        e.quantity = Quantity(nanos: Quantity(3).nanos + 1)
        variants.append(e)
        e = Self.base
        e.timestamp = EventTime(microseconds: Self.base.timestamp.microseconds + 1)
        variants.append(e)
        e = Self.base
        e.properties["endpoint"] = "/b"
        variants.append(e)
        e = Self.base
        e.properties["method"] = "GET"
        variants.append(e)
        e = Self.base
        e.properties["region"] = nil
        variants.append(e)
        e = Self.base
        e.id = "x"
        variants.append(e)
        let fingerprints = variants.map { Fingerprint(of: $0) }
        #expect(!fingerprints.contains(original))
        #expect(Set(fingerprints).count == variants.count)
    }

    @Test func withIdOnlyTheNaturalKeyCounts() {
        var keyed = Self.base
        keyed.id = "req-1"
        let original = Fingerprint(of: keyed)
        var retry = keyed
        retry.quantity = Quantity(99)
        retry.properties = Properties()
        #expect(Fingerprint(of: retry) == original)
        var other = keyed
        other.id = "req-2"
        #expect(Fingerprint(of: other) != original)
        other = keyed
        other.timestamp = EventTime(microseconds: keyed.timestamp.microseconds - 1)
        #expect(Fingerprint(of: other) != original)
    }

    @Test func lengthPrefixesKeepBoundariesApart() {
        var a = Self.base
        a.properties = Properties([("ab", "c")])
        var b = Self.base
        b.properties = Properties([("a", "bc")])
        #expect(CanonicalEncoding.bytes(of: a) != CanonicalEncoding.bytes(of: b))
        #expect(Fingerprint(of: a) != Fingerprint(of: b))
    }

    @Test func hexRoundTrip() throws {
        let fingerprint = Fingerprint(of: Self.base)
        #expect(Fingerprint(hex: fingerprint.description) == fingerprint)
        #expect(Fingerprint(bytes: fingerprint.bytes) == fingerprint)
        #expect(Fingerprint(hex: "xyz") == nil)
        #expect(Fingerprint(hex: "00") == nil)
    }
}
