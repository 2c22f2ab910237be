import NIOCore
import TallyCore

/// The JSON answer to `POST /v1/events`, one result per event in request order:
/// `{"accepted":N,"rejected":M,"results":[{"status":"accepted","fingerprint":"<32 hex>"},
/// {"status":"rejected","reason":"missing_field","field":"tenant","message":"is required"}]}`.
/// HTTP status: 200 when every event was accepted, 207 when some were, 400 when none was.
enum IngestAnswerWriter {
    static func status(of outcomes: [EventIngest.Outcome]) -> Int {
        let accepted = outcomes.reduce(0) { count, outcome in
            if case .accepted = outcome { return count + 1 }
            return count
        }
        if accepted == outcomes.count && accepted > 0 { return 200 }
        return accepted > 0 ? 207 : 400
    }

    static func json(_ outcomes: [EventIngest.Outcome], allocator: ByteBufferAllocator) -> ByteBuffer {
        var accepted = 0
        for case .accepted in outcomes { accepted += 1 }
        var out = allocator.buffer(capacity: 48 + outcomes.count * 64)
        out.writeString("{\"accepted\":\(accepted),\"rejected\":\(outcomes.count - accepted),\"results\":[")
        for (index, outcome) in outcomes.enumerated() {
            if index > 0 { out.writeInteger(UInt8(ascii: ",")) }
            switch outcome {
            case .accepted(let fingerprint):
                out.writeString("{\"status\":\"accepted\",\"fingerprint\":\"")
                out.writeFingerprintHex(fingerprint)
                out.writeString("\"}")
            case .rejected(let rejection):
                out.writeString("{\"status\":\"rejected\",\"reason\":\"\(rejection.reason.rawValue)\"")
                if let field = rejection.field { out.writeString(",\"field\":" + JSONWriter.quoted(field)) }
                out.writeString(",\"message\":" + JSONWriter.quoted(rejection.message) + "}")
            }
        }
        out.writeString("]}\n")
        return out
    }

    /// A body-level error as JSON: `{"error":"<code>","message":"..."}`.
    static func error(_ code: String, _ message: String, allocator: ByteBufferAllocator) -> ByteBuffer {
        var out = allocator.buffer(capacity: 64 + message.utf8.count)
        out.writeString("{\"error\":\"\(code)\",\"message\":" + JSONWriter.quoted(message) + "}\n")
        return out
    }
}
