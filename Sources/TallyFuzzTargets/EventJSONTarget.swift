import TallyCore
import TallySpool

/// A fixed "now" (2026-04-13T12:00:00Z): the future-timestamp rule must not make results depend
/// on the day the fuzzer runs.
private let now = EventTime(microseconds: 1_776_081_600_000_000)
private let decoders = [EventDecoder(), EventDecoder(defaultMetric: "api_calls")]

/// A request body through the JSON event decoder's two paths: the direct byte scanner the agent
/// uses and the full path (JSON tree, then fields) it falls back to. Checks: both paths give the
/// same result for every event (the direct path's guarantee); every accepted event, written as
/// its JSON line, decodes to itself on both paths; every line the agent's byte path
/// (`scanPlain`) takes is one `decodeLine` accepts, with the same fingerprint and spool record.
public func fuzzEventJSON(_ bytes: UnsafeRawBufferPointer) {
    bytes.withMemoryRebound(to: UInt8.self) { body in
        for decoder in decoders {
            let direct = decoder.decodeBody(body, now: now, direct: true)
            let full = decoder.decodeBody(body, now: now, direct: false)
            require(direct == full, "the direct path gives \(direct), the full path \(full)")
            var plain = PlainEvent()
            forEachLine(body) { line in
                guard decoder.scanPlain(line, now: now, into: &plain) else { return }
                let decoded = decoder.decodeLine(line, now: now)
                guard case .success(let event) = decoded else {
                    require(false, "the byte path takes a line the decoder answers with \(decoded)")
                    return
                }
                var scratch: [UInt8] = []
                require(Fingerprint(of: plain, in: line, scratch: &scratch) == Fingerprint(of: event), "fingerprints differ for \(event)")
                var record: [UInt8] = []
                EventRecordCodec.encode(plain, in: line, into: &record)
                require(record == EventRecordCodec.encode(event), "spool records differ for \(event)")
            }
            for case .success(let event) in direct {
                let line = Array(event.jsonLine.utf8)
                line.withUnsafeBufferPointer { line in
                    let again = decoder.decodeLine(line, now: now)
                    require(again == .success(event), "\(event) comes back from its JSON line as \(again)")
                    let fullAgain = decoder.decodeLineFullPath(line, now: now)
                    require(fullAgain == .success(event), "\(event) comes back from its JSON line on the full path as \(fullAgain)")
                }
            }
        }
    }
}
