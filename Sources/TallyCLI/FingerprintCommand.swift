public import ArgumentParser
import TallyCore

#if canImport(Glibc)
import Glibc
#endif

/// `tallyctl fingerprint`: the canonical bytes and fingerprint of events read as JSON from stdin,
/// so that an implementation in another language can be checked against this one.
public struct FingerprintCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "fingerprint",
        abstract: "Print the fingerprint (and with --canonical the canonical bytes) of JSON events on stdin.")

    @Flag(help: "Also print the canonical bytes in hex.") var canonical = false
    @Option(help: "The metric of events that name none.") var defaultMetric: String?

    public init() {}

    public func run() async throws {
        let input = readAllStandardInput()
        let decoder = EventDecoder(defaultMetric: defaultMetric)
        var failed = false
        for result in decoder.decodeBody(input, now: EventTime(microseconds: .max / 2)) {
            switch result {
            case .success(let event):
                let bytes = CanonicalEncoding.bytes(of: event)
                let fingerprint = Fingerprint(canonicalBytes: bytes)
                print(canonical ? "\(fingerprint) \(Hex.encode(bytes))" : fingerprint.description)
            case .failure(let rejection):
                print("rejected \(rejection)")
                failed = true
            }
        }
        if failed { throw ExitCode(1) }
    }
}

/// Everything on standard input.
func readAllStandardInput() -> [UInt8] {
    var data: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 1 << 16)
    while true {
        let count = chunk.withUnsafeMutableBytes { read(0, $0.baseAddress, $0.count) }
        if count <= 0 { break }
        data.append(contentsOf: chunk[0..<count])
    }
    return data
}
