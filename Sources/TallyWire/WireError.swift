/// The stable numeric codes of everything that can go wrong on the wire. The raw values travel
/// in `error` and `goaway` frames and never change meaning; new codes may be added.
public enum WireErrorCode: UInt16, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// Bytes that are not a frame: bad magic, reserved flags set, a body that does not parse.
    case malformedFrame = 1
    /// The frame's CRC32C does not match its bytes: corruption in transit.
    case checksumMismatch = 2
    /// The length in a frame header exceeds the receiver's limit.
    case frameTooLarge = 3
    /// No protocol version both sides speak, or a framing version this side does not know.
    case unsupportedVersion = 4
    /// A frame type this side does not know.
    case unknownFrameType = 5
    /// A well-formed frame that the session state does not allow (e.g. a batch before welcome).
    case unexpectedFrame = 6
    /// The challenge response (or the collector's proof) is wrong.
    case authenticationFailed = 7
    /// The collector has no key for this agent id.
    case unknownAgent = 8
    /// A batch payload that does not decode.
    case malformedPayload = 9
    /// A batch payload whose decompressed size exceeds the limit (a decompression bomb).
    case payloadTooLarge = 10
    /// A batch with more events than the limit.
    case tooManyEvents = 11
    /// More unacknowledged batches than the window allows, or a sequence already in flight.
    case windowExceeded = 12
    /// The collector is overloaded; try again later.
    case overloaded = 13
    /// The collector failed internally (e.g. its store); nothing was committed.
    case internalError = 14
    /// The collector is shutting down.
    case shuttingDown = 15
    /// A handshake or an answer took too long.
    case timeout = 16
    /// A batch sequence already committed with different events: the agent reused a sequence
    /// number (e.g. after losing its spool state). Never acked, so no event is silently dropped.
    case sequenceReused = 17
    /// Plain TCP from a peer that is not on loopback, to a collector that does not allow it:
    /// the agent must connect with TLS (SPEC §4.1).
    case plaintextRefused = 18

    /// Whether reconnecting and resending the same bytes can succeed without anyone changing a
    /// configuration or a program.
    public var isRetryable: Bool {
        switch self {
        case .checksumMismatch, .overloaded, .internalError, .shuttingDown, .timeout: true
        case .malformedFrame, .frameTooLarge, .unsupportedVersion, .unknownFrameType, .unexpectedFrame,
            .authenticationFailed, .unknownAgent, .malformedPayload, .payloadTooLarge, .tooManyEvents,
            .windowExceeded, .sequenceReused, .plaintextRefused:
            false
        }
    }

    /// The stable snake_case name used in logs and metrics.
    public var name: String {
        switch self {
        case .malformedFrame: "malformed_frame"
        case .checksumMismatch: "checksum_mismatch"
        case .frameTooLarge: "frame_too_large"
        case .unsupportedVersion: "unsupported_version"
        case .unknownFrameType: "unknown_frame_type"
        case .unexpectedFrame: "unexpected_frame"
        case .authenticationFailed: "authentication_failed"
        case .unknownAgent: "unknown_agent"
        case .malformedPayload: "malformed_payload"
        case .payloadTooLarge: "payload_too_large"
        case .tooManyEvents: "too_many_events"
        case .windowExceeded: "window_exceeded"
        case .overloaded: "overloaded"
        case .internalError: "internal_error"
        case .shuttingDown: "shutting_down"
        case .timeout: "timeout"
        case .sequenceReused: "sequence_reused"
        case .plaintextRefused: "plaintext_refused"
        }
    }

    public var description: String { "\(name) (\(rawValue))" }
}

/// A wire failure: a stable ``WireErrorCode`` and a message a person can act on. Every decoder
/// and state machine in TallyWire throws or returns this type and nothing else.
public struct WireError: Error, Sendable, Hashable, CustomStringConvertible {
    public let code: WireErrorCode
    public let message: String

    public init(_ code: WireErrorCode, _ message: String) {
        self.code = code
        self.message = message
    }

    public var isRetryable: Bool { code.isRetryable }

    public var description: String { "\(code.name): \(message)" }

    /// The error frame that tells the peer about this error.
    public var frame: ErrorFrame { ErrorFrame(code: code.rawValue, message: message) }
}
