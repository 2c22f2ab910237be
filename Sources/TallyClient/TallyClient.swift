public import NIOCore
public import NIOPosix
public import TallyCore

/// Why a request to the agent did not get an answer, or got one that means "not kept".
public enum TallyClientError: Error, CustomStringConvertible {
    /// No connection, or the connection broke before a whole answer arrived: the exchange's error.
    case unreachable(HTTPExchangeError)
    /// The agent's spool is full: nothing of the request was kept; retry after `retryAfterSeconds`.
    case spoolFull(retryAfterSeconds: Int?, status: Int)
    /// The agent answered with a status the client does not expect.
    case unexpectedStatus(Int, String)
    /// The agent's answer is not the per-event JSON it promises.
    case malformedAnswer(String)
    /// The answer did not arrive in time.
    case timedOut

    public var description: String {
        switch self {
        case .unreachable(let why): "the Tally agent is unreachable: \(why)"
        case .spoolFull(let seconds, let status):
            "the Tally agent's spool is full (HTTP \(status)); retry after \(seconds.map { "\($0) s" } ?? "a while")"
        case .unexpectedStatus(let status, let text): "the Tally agent answered HTTP \(status): \(text.prefix(200))"
        case .malformedAnswer(let why): "the Tally agent's answer is malformed: \(why)"
        case .timedOut: "the Tally agent did not answer in time"
        }
    }
}

/// What the agent did with one event of a request.
public enum EventOutcome: Sendable, Hashable {
    /// Durable in the agent's spool; this fingerprint names it.
    case accepted(Fingerprint)
    /// Refused: the reason, the field at fault (if any) and a message a person can act on.
    case rejected(EventRejection)
}

/// Sends usage events to the local Tally agent (`POST /v1/events`) and reports, per event,
/// whether the agent kept it durably. An answer of ``EventOutcome/accepted(_:)`` means the event
/// is in the agent's durable spool and will be billed exactly once or explained.
///
/// Retrying after an error is safe: the same event has the same fingerprint, so the collector
/// counts a retry as a duplicate. Give events an `id` so that retries are recognised even when
/// the caller rebuilds them.
public struct TallyClient: Sendable {
    public var exchange: HTTPExchange
    public var timeout: Duration

    /// A client for the agent at `host:port` (the default agent address is 127.0.0.1:7380).
    public init(
        host: String = "127.0.0.1", port: Int = 7380, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        timeout: Duration = .seconds(10)
    ) {
        exchange = HTTPExchange(host: host, port: port, group: group)
        self.timeout = timeout
    }

    /// Sends `events` as one NDJSON body; one outcome per event, in order. Throws
    /// ``TallyClientError/spoolFull(retryAfterSeconds:status:)`` when nothing was kept.
    public func send(_ events: [UsageEvent]) async throws(TallyClientError) -> [EventOutcome] {
        if events.isEmpty { return [] }
        var body = ByteBuffer()
        for event in events {
            body.writeString(event.jsonLine)
            body.writeInteger(UInt8(ascii: "\n"))
        }
        return try await send(body: body, contentType: "application/x-ndjson", expecting: events.count)
    }

    /// Sends one event; returns its fingerprint once it is durable, or throws its rejection
    /// (as ``TallyClientError/unexpectedStatus(_:_:)`` with the agent's message).
    @discardableResult
    public func record(_ event: UsageEvent) async throws(TallyClientError) -> Fingerprint {
        let outcomes = try await send([event])
        switch outcomes.first {
        case .accepted(let fingerprint)?: return fingerprint
        case .rejected(let rejection)?: throw .unexpectedStatus(400, rejection.description)
        case nil: throw .malformedAnswer("no result for the event")
        }
    }

    /// Sends a raw body (a JSON object, an array or NDJSON) and decodes the per-event answer.
    public func send(
        body: ByteBuffer, contentType: String = "application/json", expecting: Int? = nil
    ) async throws(TallyClientError) -> [EventOutcome] {
        let response: HTTPExchange.Response
        do {
            response = try await exchange.request(
                method: "POST", path: "/v1/events", headers: [("Content-Type", contentType)], body: body, timeout: timeout)
        } catch {
            switch error {
            case .timedOut: throw .timedOut
            case .answerTooLarge(_, let limit): throw .malformedAnswer("the answer is larger than \(limit) bytes")
            default: throw .unreachable(error)
            }
        }
        switch response.status {
        case 200, 207, 400:
            break
        case 429, 503:
            throw .spoolFull(retryAfterSeconds: response.header("retry-after").flatMap { Int($0) }, status: response.status)
        default:
            throw .unexpectedStatus(response.status, response.text)
        }
        let outcomes = try IngestAnswer.outcomes(from: response.body)
        if let expecting, outcomes.count != expecting {
            throw .malformedAnswer("\(outcomes.count) results for \(expecting) events")
        }
        return outcomes
    }
}

/// Reads the agent's per-event JSON answer:
/// `{"accepted":N,"rejected":M,"results":[{"status":"accepted","fingerprint":HEX} |
/// {"status":"rejected","reason":R,"field":F?,"message":S}, ...]}`.
public enum IngestAnswer {
    public static func outcomes(from body: ByteBuffer) throws(TallyClientError) -> [EventOutcome] {
        let bytes = Array(body.readableBytesView)
        let value: JSONValue
        do {
            value = try JSONParser.parse(bytes)
        } catch {
            throw .malformedAnswer(error.description)
        }
        guard case .object(let members) = value, case .array(let results)? = members.first(where: { $0.key == "results" })?.value
        else { throw .malformedAnswer("no results array") }
        var outcomes: [EventOutcome] = []
        outcomes.reserveCapacity(results.count)
        for result in results {
            guard case .object(let fields) = result else { throw .malformedAnswer("a result is not an object") }
            func text(_ name: String) -> String? {
                if case .string(let value)? = fields.first(where: { $0.key == name })?.value { return value }
                return nil
            }
            switch text("status") {
            case "accepted":
                guard let hex = text("fingerprint"), let fingerprint = Fingerprint(hex: hex) else {
                    throw .malformedAnswer("an accepted result without a fingerprint")
                }
                outcomes.append(.accepted(fingerprint))
            case "rejected":
                let reason = text("reason").flatMap(RejectionReason.init(rawValue:)) ?? .malformed
                outcomes.append(.rejected(EventRejection(reason, field: text("field"), text("message") ?? "")))
            default:
                throw .malformedAnswer("a result with an unknown status")
            }
        }
        return outcomes
    }
}
