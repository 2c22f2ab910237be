import NIOCore
import TallyCore
import TallyWire
import Testing

@testable import TallyCollector

/// One row of the frame table: bytes as they arrive, and the error the frame decoder must give
/// (SPEC §2, §9) — or nil when they are a prefix that must simply wait for more.
struct FrameRow: Sendable, CustomTestStringConvertible {
    let name: String
    let bytes: [UInt8]
    /// The decoder's body limit: the session's (16 MiB) unless the row is about the handshake's.
    let maxBody: Int
    let error: WireError?
    /// Whether the row is sent before the handshake (hello-time rows) or after it.
    let beforeHandshake: Bool

    init(
        _ name: String, _ bytes: [UInt8], _ error: WireError?, maxBody: Int = Int(SessionLimits.standard.maxFrameBody), beforeHandshake: Bool = false
    ) {
        self.name = name
        self.bytes = bytes
        self.maxBody = maxBody
        self.error = error
        self.beforeHandshake = beforeHandshake
    }

    var testDescription: String { name }
}

enum FrameRows {
    /// A frame with every header field given, the length and the CRC computed unless given.
    static func frame(
        type: UInt8, body: [UInt8], magic: [UInt8] = [0x54, 0x4C], version: UInt8 = 1, flags: UInt8 = 0, length: UInt32? = nil,
        crc: UInt32? = nil
    ) -> [UInt8] {
        var bytes = magic + [version, type, flags]
        bytes.appendBigEndian(UInt64(length ?? UInt32(body.count)), bytes: 4)
        bytes += body
        let checksum = crc ?? bytes.withUnsafeBytes { CRC32C.checksum($0) }
        bytes.appendBigEndian(UInt64(checksum), bytes: 4)
        return bytes
    }

    static let ping: UInt8 = 0x08
    static let eight: [UInt8] = [1, 2, 3, 4, 5, 6, 7, 8]
    static let validPing = frame(type: ping, body: eight)

    /// A hello body: versions, agent id bytes, a zero nonce, software.
    static func hello(min: UInt16 = 1, max: UInt16 = 1, agentId: [UInt8] = Array("edge-1".utf8)) -> [UInt8] {
        var body: [UInt8] = []
        body.appendBigEndian(UInt64(min), bytes: 2)
        body.appendBigEndian(UInt64(max), bytes: 2)
        body.appendBigEndian(UInt64(agentId.count), bytes: 2)
        body += agentId + [UInt8](repeating: 0, count: 32)
        body.appendBigEndian(4, bytes: 2)
        body += Array("test".utf8)
        return body
    }

    static func error(_ code: WireErrorCode, _ message: String) -> WireError { WireError(code, message) }
    static let badMagic = error(.malformedFrame, "bad magic: this is not a Tally protocol stream")
    static let corrupted = error(.checksumMismatch, "frame checksum mismatch (corrupted in transit)")

    static var rows: [FrameRow] {
        var flippedBody = validPing
        flippedBody[9] ^= 0x01
        var flippedCRC = validPing
        flippedCRC[validPing.count - 1] ^= 0x80
        var shorterLength = validPing
        shorterLength[8] = 4  // the CRC is then read from body bytes
        return [
            // magic
            FrameRow("HTTP instead of frames", Array("GET / HTTP/1.1\r\n".utf8), badMagic),
            FrameRow("first magic byte", frame(type: ping, body: eight, magic: [0x55, 0x4C]), badMagic),
            FrameRow("second magic byte", frame(type: ping, body: eight, magic: [0x54, 0x4D]), badMagic),
            FrameRow("first magic byte alone", [0x00], badMagic),
            // framing version
            FrameRow(
                "framing version 0", frame(type: ping, body: eight, version: 0),
                error(.unsupportedVersion, "framing version 0 is not supported (this side speaks 1)")),
            FrameRow(
                "framing version 2", frame(type: ping, body: eight, version: 2),
                error(.unsupportedVersion, "framing version 2 is not supported (this side speaks 1)")),
            FrameRow(
                "framing version 2, header only", [0x54, 0x4C, 0x02],
                error(.unsupportedVersion, "framing version 2 is not supported (this side speaks 1)")),
            // type
            FrameRow("type 0x00", frame(type: 0x00, body: eight), error(.unknownFrameType, "frame type 0x0 is not known")),
            FrameRow("type 0x0b", frame(type: 0x0B, body: eight), error(.unknownFrameType, "frame type 0xb is not known")),
            FrameRow("type 0xff, header only", [0x54, 0x4C, 0x01, 0xFF], error(.unknownFrameType, "frame type 0xff is not known")),
            // flags
            FrameRow("flags 0x01", frame(type: ping, body: eight, flags: 0x01), error(.malformedFrame, "reserved frame flags 0x1 are set")),
            FrameRow("flags 0x80, header only", [0x54, 0x4C, 0x01, ping, 0x80], error(.malformedFrame, "reserved frame flags 0x80 are set")),
            // the order of the checks: the first bad field is the one named
            FrameRow("bad magic and version", frame(type: ping, body: eight, magic: [0x54, 0x00], version: 9), badMagic),
            FrameRow(
                "bad version and type", frame(type: 0x42, body: eight, version: 9),
                error(.unsupportedVersion, "framing version 9 is not supported (this side speaks 1)")),
            FrameRow("bad type and flags", frame(type: 0x42, body: eight, flags: 1), error(.unknownFrameType, "frame type 0x42 is not known")),
            FrameRow(
                "bad flags and length", Array(frame(type: ping, body: [], flags: 4, length: .max).prefix(9)),
                error(.malformedFrame, "reserved frame flags 0x4 are set")),
            // length: over the limit, refused from the 9 header bytes alone
            FrameRow(
                "length one over the limit", Array(frame(type: 0x05, body: [], length: 16_777_217).prefix(9)),
                error(.frameTooLarge, "a frame body of 16777217 bytes exceeds the limit of 16777216")),
            FrameRow(
                "length 0xffffffff", Array(frame(type: 0x05, body: [], length: .max).prefix(9)),
                error(.frameTooLarge, "a frame body of 4294967295 bytes exceeds the limit of 16777216")),
            FrameRow(
                "hello over the handshake limit", Array(frame(type: 0x01, body: [], length: 65_537).prefix(9)),
                error(.frameTooLarge, "a frame body of 65537 bytes exceeds the limit of 65536"), maxBody: 65_536, beforeHandshake: true),
            // length: what the body holds
            FrameRow("ping length 0", frame(type: ping, body: []), error(.malformedFrame, "ping frame: ends before the opaque value")),
            FrameRow(
                "ping length 7", frame(type: ping, body: Array(eight.prefix(7))), error(.malformedFrame, "ping frame: ends before the opaque value")),
            FrameRow("ping length 9", frame(type: ping, body: eight + [9]), error(.malformedFrame, "1 unexpected bytes after the ping frame body")),
            FrameRow("batch length 0", frame(type: 0x05, body: []), error(.malformedFrame, "batch frame: ends before the sequence")),
            FrameRow(
                "auth length 31", frame(type: 0x03, body: [UInt8](repeating: 0, count: 31)),
                error(.malformedFrame, "auth frame: ends before the proof")),
            FrameRow("length shorter than the frame", shorterLength, corrupted),
            FrameRow("length longer than the bytes sent", Array(frame(type: ping, body: eight, length: 100).prefix(30)), nil),
            // checksum
            FrameRow("flipped body bit", flippedBody, corrupted),
            FrameRow("flipped checksum bit", flippedCRC, corrupted),
            // bodies that do not parse
            FrameRow(
                "hello minimum above maximum", frame(type: 0x01, body: hello(min: 2, max: 1)),
                error(.malformedFrame, "hello frame: minimum version 2 > maximum 1"),
                beforeHandshake: true),
            FrameRow(
                "hello agent id not UTF-8", frame(type: 0x01, body: hello(agentId: [0x65, 0xFF])),
                error(.malformedFrame, "hello frame: the agent id is truncated or not UTF-8"), beforeHandshake: true),
            FrameRow(
                "hello agent id longer than the body", Array(frame(type: 0x01, body: Array(hello().prefix(8)))),
                error(.malformedFrame, "hello frame: the agent id is truncated or not UTF-8"), beforeHandshake: true),
        ]
    }

    /// Valid frames the collector's session refuses: `(name, frame, before the handshake, error)`.
    static let sessionRows: [(String, [UInt8], Bool, WireError)] = [
        (
            "hello with an empty agent id", frame(type: 0x01, body: hello(agentId: [])), true,
            error(.malformedFrame, "an agent id must be 1 to 128 bytes of printable text")
        ),
        (
            "hello with a control character in the agent id", frame(type: 0x01, body: hello(agentId: [0x61, 0x0A])), true,
            error(.malformedFrame, "an agent id must be 1 to 128 bytes of printable text")
        ),
        (
            "hello with versions 2-3", frame(type: 0x01, body: hello(min: 2, max: 3)), true,
            error(.unsupportedVersion, "the agent speaks versions 2-3; this collector speaks 1-1")
        ),
        (
            "a batch before the handshake", frame(type: 0x05, body: [UInt8](repeating: 0, count: 8)), true,
            error(.unexpectedFrame, "a frame of type batch is not expected now")
        ),
        (
            "an ack from the agent", frame(type: 0x06, body: [UInt8](repeating: 0, count: 25)), false,
            error(.unexpectedFrame, "a frame of type ack is not expected now")
        ),
        ("a second hello", frame(type: 0x01, body: hello()), false, error(.unexpectedFrame, "a frame of type hello is not expected now")),
    ]
}

/// Section 2: frames. Each header field wrong, each length, each truncation: the exact error of
/// the frame decoder, and the same error frame from a collector connection, which then closes,
/// counts a frame error, and keeps the batch it committed before.
@Suite("Bad input: frames", .serialized)
struct FrameTableTests {
    @Test(arguments: FrameRows.rows)
    func decoder(_ row: FrameRow) {
        var decoder = FrameDecoder(maxBodyLength: row.maxBody)
        var buffer = ByteBuffer(bytes: row.bytes)
        do throws(WireError) {
            let frame = try decoder.decode(buffer: &buffer)
            #expect(frame == nil, "\(row.name): decoded \(String(describing: frame))")
            #expect(row.error == nil, "\(row.name): waited for more bytes")
        } catch {
            #expect(error == row.error, "\(row.name)")
        }
        // Failing or waiting, the decoder never moves past bytes it did not return.
        #expect(buffer.readerIndex == 0 && buffer.readableBytes == row.bytes.count, "\(row.name)")
    }

    @Test(arguments: FrameRows.rows)
    func collector(_ row: FrameRow) async throws {
        let collector = try CollectorUnderTest()
        var connection: AgentConnection
        var committed: [UsageEvent] = []
        if row.beforeHandshake {
            connection = try collector.connect()
        } else {
            connection = try await collector.open()
            committed = recentEvents(3)
            let ack = try await collector.feed(&connection, try CollectorUnderTest.batchFrame(1, committed))
            #expect(ack.frames == [.ack(BatchAck(sequence: 1, accepted: 3))], "\(row.name)")
        }
        let answer = try await collector.feed(&connection, row.bytes)
        let received = try await collector.eventsReceived()
        let frameErrors = collector.counter("tally_collector_frame_errors_total")
        await collector.stop()
        if let error = row.error {
            #expect(answer.error == error, "\(row.name): \(answer)")
            #expect(answer.frames.count == 1 && answer.closed, "\(row.name): \(answer)")
            #expect(frameErrors == 1, "\(row.name)")
        } else {
            #expect(answer.frames.isEmpty && !answer.closed, "\(row.name): \(answer)")
            #expect(frameErrors == 0)
        }
        // The batch committed before the bad frame is still there, and nothing else.
        #expect(received == committed.count, "\(row.name)")
    }

    /// Valid frames at the wrong time: the session's error, the connection closed.
    @Test(arguments: FrameRows.sessionRows.indices)
    func session(_ index: Int) async throws {
        let (name, bytes, beforeHandshake, expected) = FrameRows.sessionRows[index]
        let collector = try CollectorUnderTest()
        var connection = beforeHandshake ? try collector.connect() : try await collector.open()
        let answer = try await collector.feed(&connection, bytes)
        let received = try await collector.eventsReceived()
        await collector.stop()
        #expect(answer.error == expected, "\(name): \(answer)")
        #expect(answer.frames.count == 1 && answer.closed, "\(name)")
        #expect(received == 0)
    }

    static let batchBytes: [UInt8] = {
        var buffer = (try? CollectorUnderTest.batchFrame(7, recentEvents(2, from: 100))) ?? ByteBuffer()
        return buffer.readBytes(length: buffer.readableBytes) ?? []
    }()

    /// A frame cut at every byte offset is no error: the decoder waits without moving, and a
    /// collector connection that got only the prefix sends nothing, writes nothing and keeps
    /// the connection; the rest of the frame then completes it and the batch is acked once.
    @Test(arguments: 0..<batchBytes.count)
    func truncatedAt(_ cut: Int) async throws {
        let bytes = Self.batchBytes
        var decoder = FrameDecoder()
        var prefix = ByteBuffer(bytes: bytes[0..<cut])
        #expect(try decoder.decode(buffer: &prefix) == nil)
        #expect(prefix.readerIndex == 0 && prefix.readableBytes == cut)

        let collector = try CollectorUnderTest()
        var connection = try await collector.open()
        let first = try await collector.feed(&connection, Array(bytes[0..<cut]))
        let receivedAfterPrefix = try await collector.eventsReceived()
        let rest = try await collector.feed(&connection, Array(bytes[cut...]))
        let received = try await collector.eventsReceived()
        await collector.stop()
        #expect(first.frames.isEmpty && !first.closed, "cut at \(cut): \(first)")
        #expect(receivedAfterPrefix == 0)
        #expect(rest.frames == [.ack(BatchAck(sequence: 7, accepted: 2))], "cut at \(cut): \(rest)")
        #expect(received == 2)
    }
}
