import TallyCore
import TallyPricing
import Testing

@testable import TallyCollector

/// The invoice's JSON written member by member (`canonicalText()`, what every charges read and
/// every frozen invoice use) is byte for byte what `JSONWriter.encode` writes through
/// `Encodable`: a final invoice's SHA-256 is taken over these bytes, so they must not move.
@Suite struct InvoiceJSONTests {
    /// Texts that exercise the writer's escapes: quotes, backslashes, control characters,
    /// non-ASCII, a slash, and plain ones.
    static let texts = [
        "", "acme", "2026-03", "/v1/search?q=\"x\"", "back\\slash", "line\nbreak\ttab\r", "\u{01}\u{1F}", "é e\u{301} 🌍", "1234.56",
        "a/b", "USD",
    ]

    static func text(_ random: inout SplitMix64) -> String { texts[Int(random.next() % UInt64(texts.count))] }

    static func maybe(_ random: inout SplitMix64) -> String? { random.next() % 3 == 0 ? nil : text(&random) }

    static func document(_ random: inout SplitMix64) throws -> InvoiceDocument {
        var document = try InvoiceDocument.decode(
            json:
                #"{"tenant":"t","period":"2026-03","periodStart":"s","periodEnd":"e","currency":"USD","segments":[],"lines":[],"subtotal":"0","adjustments":"0","total":"0"}"#
        )
        document.tenant = text(&random)
        document.period = text(&random)
        document.periodStart = text(&random)
        document.periodEnd = text(&random)
        document.currency = text(&random)
        document.subtotal = text(&random)
        document.adjustments = text(&random)
        document.total = text(&random)
        document.segments = (0..<Int(random.next() % 3)).map { _ in
            InvoiceDocument.Segment(plan: text(&random), start: text(&random), end: text(&random))
        }
        document.lines = (0..<Int(random.next() % 5)).map { _ in
            InvoiceDocument.Line(
                kind: text(&random), description: text(&random), plan: text(&random), segmentStart: text(&random),
                segmentEnd: text(&random), metric: maybe(&random), propertyValue: maybe(&random), quantity: text(&random),
                freeQuantity: text(&random),
                steps: (0..<Int(random.next() % 4)).map { _ in
                    InvoiceDocument.Step(
                        tier: random.next() % 2 == 0 ? nil : Int(truncatingIfNeeded: random.next() % 2_000) - 1_000, quantity: text(&random),
                        unitPrice: text(&random), amount: text(&random))
                }, exactAmount: text(&random), amount: text(&random), adjusts: maybe(&random))
        }
        if random.next() % 2 == 0 {
            document.corrections = (0..<Int(random.next() % 3)).map { _ in
                InvoiceDocument.Correction(
                    key: text(&random), metric: text(&random), fingerprint: text(&random), eventTime: text(&random), action: text(&random),
                    quantityDelta: text(&random), adjusts: maybe(&random), reason: text(&random), actor: text(&random),
                    createdAt: text(&random), trace: text(&random))
            }
        }
        return document
    }

    @Test func theDocumentAndTheViewAreWrittenAsTheEncodableWriterWritesThem() throws {
        var random = SplitMix64(seed: 67)
        var sawCorrections = false
        var sawOptionals = (metric: false, noMetric: false, tier: false, noTier: false)
        for round in 0..<400 {
            let document = try Self.document(&random)
            let written = document.canonicalText().text
            #expect(written == (try JSONWriter.encode(document)), "round \(round)")
            // It reads back as the same document.
            #expect(try InvoiceDocument.decode(json: written) == document, "round \(round)")
            sawCorrections = sawCorrections || document.corrections?.isEmpty == false
            for line in document.lines {
                if line.metric == nil { sawOptionals.noMetric = true } else { sawOptionals.metric = true }
                for step in line.steps { if step.tier == nil { sawOptionals.noTier = true } else { sawOptionals.tier = true } }
            }
            let view = InvoiceView(
                status: round % 2 == 0 ? .draft : .final, sha256: Self.maybe(&random), finalizedAt: Self.maybe(&random),
                closesAt: Self.text(&random), invoice: try EncodedInvoice(document))
            #expect(view.canonicalText() == (try JSONWriter.encode(view)), "round \(round)")
        }
        #expect(sawCorrections && sawOptionals.metric && sawOptionals.noMetric && sawOptionals.tier && sawOptionals.noTier)
    }
}
