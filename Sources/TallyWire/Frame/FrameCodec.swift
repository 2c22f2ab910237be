public import NIOCore
public import TallyCore

/// The fixed parts of every frame (SPEC.md §2): `"TL"`, framing version, type, flags, a u32
/// body length, the body, then a CRC32C over everything before it.
public enum FrameLayout {
    public static let magic: (UInt8, UInt8) = (0x54, 0x4C)
    /// The framing version this code reads and writes. Protocol versions are negotiated in the
    /// handshake; this one changes only if the frame envelope itself changes.
    public static let framingVersion: UInt8 = 1
    public static let headerSize = 9
    public static let trailerSize = 4
    /// The body limit of a connection that has not completed its handshake.
    public static let handshakeMaxBody = 64 * 1024
}

/// Encodes frames. Conforms to NIO's `MessageToByteEncoder`, so a channel pipeline can use it
/// as it is. Encoding never fails for a frame that the decoder would accept.
public struct FrameEncoder: MessageToByteEncoder, Sendable {
    public typealias OutboundIn = Frame

    public init() {}

    public func encode(data frame: Frame, out: inout ByteBuffer) throws(WireError) {
        let start = out.writerIndex
        out.writeInteger(FrameLayout.magic.0)
        out.writeInteger(FrameLayout.magic.1)
        out.writeInteger(FrameLayout.framingVersion)
        out.writeInteger(frame.type.rawValue)
        out.writeInteger(UInt8(0))
        let lengthIndex = out.writerIndex
        out.writeInteger(UInt32(0))
        let bodyStart = out.writerIndex
        do throws(WireError) {
            try Self.writeBody(frame, to: &out)
        } catch {
            out.moveWriterIndex(to: start)
            throw error
        }
        let bodyLength = out.writerIndex - bodyStart
        guard bodyLength <= Int(UInt32.max) else {
            out.moveWriterIndex(to: start)
            throw WireError(.frameTooLarge, "a frame body of \(bodyLength) bytes does not fit a u32 length")
        }
        out.setInteger(UInt32(bodyLength), at: lengthIndex)
        let crc = out.withUnsafeReadableBytes { all in
            CRC32C.checksum(UnsafeRawBufferPointer(rebasing: all[(start - out.readerIndex)...]))
        }
        out.writeInteger(crc)
    }

    /// The frame's bytes in a new buffer.
    public func encode(_ frame: Frame) throws(WireError) -> ByteBuffer {
        var out = ByteBuffer()
        try encode(data: frame, out: &out)
        return out
    }

    private static func writeBody(_ frame: Frame, to out: inout ByteBuffer) throws(WireError) {
        switch frame {
        case .hello(let hello):
            out.writeInteger(hello.minVersion)
            out.writeInteger(hello.maxVersion)
            try writeString(hello.agentId, field: "agent id", to: &out)
            out.writeBytes(hello.agentNonce.bytes)
            try writeString(hello.software, field: "software", to: &out)
        case .challenge(let challenge):
            out.writeInteger(challenge.version)
            out.writeBytes(challenge.collectorNonce.bytes)
        case .auth(let auth):
            out.writeBytes(auth.proof.bytes)
        case .welcome(let welcome):
            out.writeInteger(welcome.version)
            out.writeInteger(UInt8(welcome.authenticated ? 1 : 0))
            out.writeBytes(welcome.authenticated ? welcome.proof.bytes : Proof.none.bytes)
            out.writeInteger(welcome.limits.maxFrameBody)
            out.writeInteger(welcome.limits.maxDecompressedBytes)
            out.writeInteger(welcome.limits.maxEventsPerBatch)
            out.writeInteger(welcome.limits.window)
        case .batch(let batch):
            out.writeInteger(batch.sequence)
            out.writeImmutableBuffer(batch.payload)
        case .ack(let ack):
            try writeAck(ack, to: &out)
        case .error(let error):
            out.writeInteger(error.code)
            try writeString(error.message, field: "error message", to: &out)
        case .ping(let opaque), .pong(let opaque):
            out.writeInteger(opaque)
        case .goaway(let goaway):
            out.writeInteger(goaway.code)
            out.writeInteger(goaway.retryAfterMilliseconds)
            try writeString(goaway.message, field: "goaway message", to: &out)
        }
    }

    private static func writeAck(_ ack: BatchAck, to out: inout ByteBuffer) throws(WireError) {
        try AckRules.check(ack)
        out.writeInteger(ack.sequence)
        out.writeInteger(ack.status.rawValue)
        out.writeInteger(ack.accepted)
        out.writeInteger(ack.duplicate)
        out.writeInteger(ack.late)
        out.writeInteger(ack.rejected)
        for rejection in ack.rejections {
            out.writeInteger(rejection.index)
            out.writeInteger(ReasonCode.code(of: rejection.reason))
        }
    }

    private static func writeString(_ text: String, field: String, to out: inout ByteBuffer) throws(WireError) {
        guard text.utf8.count <= Int(UInt16.max) else {
            throw WireError(.malformedFrame, "the \(field) is \(text.utf8.count) bytes; a str16 holds at most 65535")
        }
        out.writeString16(text)
    }
}

/// The one-byte wire codes of ``RejectionReason`` (SPEC.md §5.3). Stable forever.
public enum ReasonCode {
    public static func code(of reason: RejectionReason) -> UInt8 {
        switch reason {
        case .malformed: 1
        case .missingField: 2
        case .invalidField: 3
        case .unknownField: 4
        case .limitExceeded: 5
        case .futureTimestamp: 6
        case .tooOld: 7
        case .late: 8
        }
    }

    public static func reason(of code: UInt8) -> RejectionReason? {
        RejectionReason.allCases.first { Self.code(of: $0) == code }
    }
}

/// The invariants of an ack that both the encoder and the decoder enforce.
enum AckRules {
    static func check(_ ack: BatchAck) throws(WireError) {
        switch ack.status {
        case .committed:
            guard ack.rejections.count == Int(ack.rejected) else {
                throw WireError(.malformedFrame, "ack \(ack.sequence) counts \(ack.rejected) rejected events but lists \(ack.rejections.count)")
            }
        case .malformed:
            guard ack.accepted == 0, ack.duplicate == 0, ack.late == 0, ack.rejections.isEmpty else {
                throw WireError(.malformedFrame, "ack \(ack.sequence) of a malformed batch may only count rejected events")
            }
        }
        var previous: UInt32?
        for rejection in ack.rejections {
            if let previous, rejection.index <= previous {
                throw WireError(.malformedFrame, "ack \(ack.sequence) lists rejected indexes out of order")
            }
            guard UInt64(rejection.index) < ack.eventCount else {
                throw WireError(.malformedFrame, "ack \(ack.sequence) rejects index \(rejection.index) of \(ack.eventCount) events")
            }
            previous = rejection.index
        }
    }
}

/// A single-step frame decoder (NIO's `NIOSingleStepByteToMessageDecoder`): `decode(buffer:)`
/// returns nil until a whole frame is there, moves the reader index only past a frame it
/// returns, and throws a ``WireError`` — leaving the reader index alone — for bytes that can
/// never become a valid frame. The body length is checked against ``maxBodyLength`` as soon as
/// the 9 header bytes are in, before waiting for or allocating the body.
public struct FrameDecoder: NIOSingleStepByteToMessageDecoder, Sendable {
    public typealias InboundOut = Frame

    /// The largest body accepted. Start a server connection at
    /// ``FrameLayout/handshakeMaxBody`` and raise it once the handshake is done.
    public var maxBodyLength: Int

    public init(maxBodyLength: Int = Int(SessionLimits.standard.maxFrameBody)) {
        self.maxBodyLength = maxBodyLength
    }

    public mutating func decode(buffer: inout ByteBuffer) throws(WireError) -> Frame? {
        let start = buffer.readerIndex
        let available = buffer.readableBytes
        // Check each header byte as soon as it arrives, so garbage fails fast.
        if available >= 1, buffer.getInteger(at: start, as: UInt8.self) != FrameLayout.magic.0 {
            throw WireError(.malformedFrame, "bad magic: this is not a Tally protocol stream")
        }
        if available >= 2, buffer.getInteger(at: start + 1, as: UInt8.self) != FrameLayout.magic.1 {
            throw WireError(.malformedFrame, "bad magic: this is not a Tally protocol stream")
        }
        if available >= 3, let version = buffer.getInteger(at: start + 2, as: UInt8.self),
            version != FrameLayout.framingVersion
        {
            throw WireError(.unsupportedVersion, "framing version \(version) is not supported (this side speaks \(FrameLayout.framingVersion))")
        }
        var frameType: FrameType?
        if available >= 4, let raw = buffer.getInteger(at: start + 3, as: UInt8.self) {
            guard let known = FrameType(rawValue: raw) else {
                throw WireError(.unknownFrameType, "frame type 0x\(String(raw, radix: 16)) is not known")
            }
            frameType = known
        }
        if available >= 5, let flags = buffer.getInteger(at: start + 4, as: UInt8.self), flags != 0 {
            throw WireError(.malformedFrame, "reserved frame flags 0x\(String(flags, radix: 16)) are set")
        }
        guard available >= FrameLayout.headerSize, let type = frameType,
            let length = buffer.getInteger(at: start + 5, as: UInt32.self)
        else { return nil }
        guard UInt64(length) <= UInt64(maxBodyLength) else {
            throw WireError(.frameTooLarge, "a frame body of \(length) bytes exceeds the limit of \(maxBodyLength)")
        }
        let total = FrameLayout.headerSize + Int(length) + FrameLayout.trailerSize
        guard available >= total else { return nil }
        let computed = buffer.withUnsafeReadableBytes { bytes in
            CRC32C.checksum(UnsafeRawBufferPointer(rebasing: bytes[0..<(FrameLayout.headerSize + Int(length))]))
        }
        guard let stored = buffer.getInteger(at: start + total - FrameLayout.trailerSize, as: UInt32.self),
            stored == computed
        else {
            throw WireError(.checksumMismatch, "frame checksum mismatch (corrupted in transit)")
        }
        guard var body = buffer.getSlice(at: start + FrameLayout.headerSize, length: Int(length)) else { return nil }
        let frame = try Self.parseBody(type, &body)
        guard body.readableBytes == 0 else {
            throw WireError(.malformedFrame, "\(body.readableBytes) unexpected bytes after the \(type) frame body")
        }
        buffer.moveReaderIndex(forwardBy: total)
        return frame
    }

    public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws(WireError) -> Frame? {
        try decode(buffer: &buffer)
    }

    private static func parseBody(_ type: FrameType, _ body: inout ByteBuffer) throws(WireError) -> Frame {
        func fail(_ what: String) -> WireError { WireError(.malformedFrame, "\(type) frame: \(what)") }
        func integer<T: FixedWidthInteger>(_ what: String, as: T.Type = T.self) throws(WireError) -> T {
            guard let value = body.readInteger(as: T.self) else { throw fail("ends before the \(what)") }
            return value
        }
        func bytes(_ count: Int, _ what: String) throws(WireError) -> [UInt8] {
            guard let value = body.readBytes(length: count) else { throw fail("ends before the \(what)") }
            return value
        }
        func string(_ what: String) throws(WireError) -> String {
            guard let value = body.readString16() else { throw fail("the \(what) is truncated or not UTF-8") }
            return value
        }
        switch type {
        case .hello:
            let minVersion: UInt16 = try integer("minimum version")
            let maxVersion: UInt16 = try integer("maximum version")
            let agentId = try string("agent id")
            let nonce = Nonce(uncheckedBytes: try bytes(Nonce.byteCount, "agent nonce"))
            let software = try string("software")
            guard minVersion <= maxVersion else { throw fail("minimum version \(minVersion) > maximum \(maxVersion)") }
            return .hello(Hello(minVersion: minVersion, maxVersion: maxVersion, agentId: agentId, agentNonce: nonce, software: software))
        case .challenge:
            let version: UInt16 = try integer("version")
            let nonce = Nonce(uncheckedBytes: try bytes(Nonce.byteCount, "collector nonce"))
            return .challenge(Challenge(version: version, collectorNonce: nonce))
        case .auth:
            return .auth(Auth(proof: Proof(uncheckedBytes: try bytes(Proof.byteCount, "proof"))))
        case .welcome:
            let version: UInt16 = try integer("version")
            let flags: UInt8 = try integer("flags")
            guard flags <= 1 else { throw fail("reserved flags 0x\(String(flags, radix: 16)) are set") }
            let proof = Proof(uncheckedBytes: try bytes(Proof.byteCount, "proof"))
            if flags == 0 && proof != .none { throw fail("an unauthenticated welcome must carry a zero proof") }
            let limits = SessionLimits(
                maxFrameBody: try integer("frame limit"), maxDecompressedBytes: try integer("decompressed limit"),
                maxEventsPerBatch: try integer("event limit"), window: try integer("window"))
            return .welcome(Welcome(authenticated: flags == 1, version: version, proof: proof, limits: limits))
        case .batch:
            let sequence: UInt64 = try integer("sequence")
            let payload = body.readSlice(length: body.readableBytes) ?? ByteBuffer()
            return .batch(Batch(sequence: sequence, payload: payload))
        case .ack:
            let sequence: UInt64 = try integer("sequence")
            let rawStatus: UInt8 = try integer("status")
            guard let status = BatchAck.Status(rawValue: rawStatus) else { throw fail("unknown status \(rawStatus)") }
            var ack = BatchAck(
                sequence: sequence, status: status, accepted: try integer("accepted count"),
                duplicate: try integer("duplicate count"), late: try integer("late count"),
                rejected: try integer("rejected count"))
            let listed = status == .committed ? Int(ack.rejected) : 0
            // Each entry is 5 bytes: refuse a count the body cannot hold before reserving for it.
            guard body.readableBytes >= listed * 5 else { throw fail("lists fewer rejections than it counts") }
            ack.rejections.reserveCapacity(listed)
            for _ in 0..<listed {
                let index: UInt32 = try integer("rejected index")
                let code: UInt8 = try integer("reason code")
                guard let reason = ReasonCode.reason(of: code) else { throw fail("unknown reason code \(code)") }
                ack.rejections.append(BatchAck.Rejection(index: index, reason: reason))
            }
            try AckRules.check(ack)
            return .ack(ack)
        case .error:
            let code: UInt16 = try integer("code")
            return .error(ErrorFrame(code: code, message: try string("message")))
        case .ping:
            return .ping(try integer("opaque value"))
        case .pong:
            return .pong(try integer("opaque value"))
        case .goaway:
            let code: UInt16 = try integer("code")
            let retryAfter: UInt32 = try integer("retry delay")
            return .goaway(GoAway(code: code, retryAfterMilliseconds: retryAfter, message: try string("message")))
        }
    }
}
