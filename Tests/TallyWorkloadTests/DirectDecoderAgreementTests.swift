@testable import TallyCore
import TallyTestSupport
import Testing
import TallyWorkload

/// The agent's direct event path against the full JSON path, over the reference workload (valid
/// lines, retries, late events and every kind of invalid line it makes): same result for each.
@Suite("The direct event decoder on the reference workload", .offThePool)
struct DirectDecoderAgreementTests {
    @Test("every line decodes the same way on both paths, one by one and as bodies")
    func agreesOnTheReferenceWorkload() throws {
        let bytes = try generate(WorkloadConfiguration(seed: 7, events: 30_000))
        let decoders = [EventDecoder(), EventDecoder(defaultMetric: "api_calls")]
        var lines = 0
        var rejected = 0
        bytes.withUnsafeBufferPointer { buffer in
            for decoder in decoders {
                forEachLine(buffer) { line in
                    let direct = decoder.decodeLine(line, now: farFuture)
                    #expect(direct == decoder.decodeLineFullPath(line, now: farFuture))
                    lines += 1
                    if case .failure = direct { rejected += 1 }
                }
                // Bodies of 100 lines, as the HTTP path takes them.
                var start = 0
                var newlines = 0
                for index in 0..<buffer.count where buffer[index] == 0x0A {
                    newlines += 1
                    if newlines % 100 == 0 {
                        let body = UnsafeBufferPointer(rebasing: buffer[start...index])
                        #expect(decoder.decodeBody(body, now: farFuture, direct: true) == decoder.decodeBody(body, now: farFuture, direct: false))
                        start = index + 1
                    }
                }
            }
        }
        #expect(lines == 60_000)
        #expect(rejected > 0)
    }
}
