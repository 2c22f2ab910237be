import NIOCore
import Testing
import TallyWorkload
import TallyCore
@testable import TallyWire

@Suite struct FrameTests {
    @Test(arguments: Fixtures.frames.map(\.name))
    func roundTrip(name: String) throws {
        let frame = try #require(Fixtures.frames.first { $0.name == name }).frame
        var buffer = try Fixtures.encode(frame)
        let total = buffer.readableBytes
        var decoder = FrameDecoder()
        let decoded = try decoder.decode(buffer: &buffer)
        #expect(decoded == frame)
        #expect(buffer.readableBytes == 0)
        #expect(total >= FrameLayout.headerSize + FrameLayout.trailerSize)
    }

    @Test func tornFrameAtEveryOffsetNeedsMore() throws {
        for (_, frame) in Fixtures.frames {
            let bytes = try Fixtures.bytes(frame)
            for cut in 0..<bytes.count {
                var buffer = ByteBuffer(bytes: bytes[0..<cut])
                var decoder = FrameDecoder()
                #expect(try decoder.decode(buffer: &buffer) == nil, "cut at \(cut) of \(frame.type)")
                #expect(buffer.readerIndex == 0 && buffer.readableBytes == cut)
            }
        }
    }

    @Test func byteByByteDeliveryYieldsEveryFrameInOrder() throws {
        var stream: [UInt8] = []
        for (_, frame) in Fixtures.frames { stream += try Fixtures.bytes(frame) }
        var buffer = ByteBuffer()
        var decoder = FrameDecoder()
        var decoded: [Frame] = []
        for byte in stream {
            buffer.writeInteger(byte)
            while let frame = try decoder.decode(buffer: &buffer) { decoded.append(frame) }
        }
        #expect(decoded == Fixtures.frames.map(\.frame))
    }

    @Test func everyFlippedBitIsCaught() throws {
        let bytes = try Fixtures.bytes(Fixtures.frames[0].frame)
        for position in 0..<bytes.count {
            for bit in 0..<8 {
                var corrupt = bytes
                corrupt[position] ^= 1 << bit
                var buffer = ByteBuffer(bytes: corrupt)
                var decoder = FrameDecoder()
                do {
                    let frame = try decoder.decode(buffer: &buffer)
                    // A flipped length bit can make the frame look longer: then it waits.
                    #expect(frame == nil, "flip at \(position).\(bit) decoded")
                } catch {
                    #expect(buffer.readerIndex == 0)
                }
            }
        }
    }

    @Test func badChecksum() throws {
        var bytes = try Fixtures.bytes(.ping(7))
        bytes[bytes.count - 1] ^= 0xFF
        #expect(try decodeError(bytes)?.code == .checksumMismatch)
        var body = try Fixtures.bytes(.ping(7))
        body[FrameLayout.headerSize] ^= 0x01
        #expect(try decodeError(body)?.code == .checksumMismatch)
    }

    @Test func oversizeLengthFailsFromTheHeaderAlone() throws {
        var header: [UInt8] = [0x54, 0x4C, 0x01, FrameType.batch.rawValue, 0x00]
        header += [0x7F, 0xFF, 0xFF, 0xFF]
        var buffer = ByteBuffer(bytes: header)
        var decoder = FrameDecoder(maxBodyLength: 1 << 20)
        #expect(throws: WireError.self) { try decoder.decode(buffer: &buffer) }
        #expect(try decodeError(header, max: 1 << 20)?.code == .frameTooLarge)
        #expect(buffer.readerIndex == 0)
        // Exactly at the limit is fine.
        var atLimit = FrameDecoder(maxBodyLength: 12)
        var frame = try Fixtures.encode(.batch(Batch(sequence: 1, payload: ByteBuffer(bytes: [1, 2, 3, 4]))))
        #expect(try atLimit.decode(buffer: &frame) != nil)
        var belowLimit = FrameDecoder(maxBodyLength: 11)
        var again = try Fixtures.encode(.batch(Batch(sequence: 1, payload: ByteBuffer(bytes: [1, 2, 3, 4]))))
        #expect(throws: WireError(.frameTooLarge, "a frame body of 12 bytes exceeds the limit of 11")) {
            try belowLimit.decode(buffer: &again)
        }
    }

    @Test func unknownTypeVersionMagicAndFlags() throws {
        #expect(try decodeError([0x54, 0x4C, 0x01, 0x7E])?.code == .unknownFrameType)
        #expect(try decodeError([0x54, 0x4C, 0x02])?.code == .unsupportedVersion)
        #expect(try decodeError([0x47])?.code == .malformedFrame)  // "GET / HTTP/1.1" fails at once
        #expect(try decodeError([0x54, 0x4C, 0x01, 0x08, 0x80])?.code == .malformedFrame)
    }

    @Test func trailingBytesInBodyAreMalformed() throws {
        // A ping whose body has 9 bytes instead of 8, with a correct CRC.
        var buffer = ByteBuffer(bytes: [0x54, 0x4C, 0x01, FrameType.ping.rawValue, 0x00, 0, 0, 0, 9] + [UInt8](repeating: 1, count: 9))
        let crc = buffer.withUnsafeReadableBytes { CRC32C.checksum($0) }
        buffer.writeInteger(crc)
        var decoder = FrameDecoder()
        #expect(throws: WireError.self) { try decoder.decode(buffer: &buffer) }
        #expect(buffer.readerIndex == 0)
    }

    @Test func ackInvariantsAreEnforcedBothWays() throws {
        let bad = BatchAck(sequence: 1, accepted: 1, rejected: 1, rejections: [])
        #expect(throws: WireError.self) { try FrameEncoder().encode(.ack(bad)) }
        let outOfOrder = BatchAck(
            sequence: 1, accepted: 1, rejected: 2, rejections: [.init(index: 2, reason: .late), .init(index: 1, reason: .late)])
        #expect(throws: WireError.self) { try FrameEncoder().encode(.ack(outOfOrder)) }
        let outOfRange = BatchAck(sequence: 1, accepted: 0, rejected: 1, rejections: [.init(index: 1, reason: .late)])
        #expect(throws: WireError.self) { try FrameEncoder().encode(.ack(outOfRange)) }
    }

    @Test func reasonCodesAreStable() {
        let codes = RejectionReason.allCases.map { ReasonCode.code(of: $0) }
        #expect(codes == [1, 2, 3, 4, 5, 6, 7, 8])
        for reason in RejectionReason.allCases { #expect(ReasonCode.reason(of: ReasonCode.code(of: reason)) == reason) }
        #expect(ReasonCode.reason(of: 0) == nil)
        #expect(ReasonCode.reason(of: 9) == nil)
    }

    @Test func errorCodesAreStableAndClassified() {
        #expect(WireErrorCode.allCases.map(\.rawValue) == Array(1...18))
        #expect(!WireErrorCode.plaintextRefused.isRetryable && WireErrorCode.plaintextRefused.name == "plaintext_refused")
        #expect(WireErrorCode.checksumMismatch.isRetryable)
        #expect(WireErrorCode.overloaded.isRetryable)
        #expect(!WireErrorCode.authenticationFailed.isRetryable)
        #expect(!WireErrorCode.sequenceReused.isRetryable)
        #expect(Set(WireErrorCode.allCases.map(\.name)).count == WireErrorCode.allCases.count)
    }

    private func decodeError(_ bytes: [UInt8], max: Int = 1 << 24) throws -> WireError? {
        var buffer = ByteBuffer(bytes: bytes)
        var decoder = FrameDecoder(maxBodyLength: max)
        do throws(WireError) {
            _ = try decoder.decode(buffer: &buffer)
            return nil
        } catch {
            #expect(buffer.readerIndex == 0)
            return error
        }
    }
}

@Suite struct FrameFuzzTests {
    /// Random streams, and valid streams with random damage, never crash the decoder: each
    /// decode returns a frame, asks for more, or throws a WireError with the reader index intact.
    @Test func randomStreamsNeverCrash() throws {
        var rng = SplitMix64(seed: 99)
        var valid: [UInt8] = []
        for (_, frame) in Fixtures.frames { valid += try Fixtures.bytes(frame) }
        for round in 0..<2_000 {
            var bytes: [UInt8]
            if round % 2 == 0 {
                bytes = (0..<Int(rng.next() % 64)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
                if round % 4 == 0 { bytes = [0x54, 0x4C, 0x01, UInt8(1 + rng.next() % 10), 0] + bytes }
            } else {
                bytes = valid
                for _ in 0..<(1 + rng.next() % 3) { bytes[Int(rng.next() % UInt64(bytes.count))] = UInt8(truncatingIfNeeded: rng.next()) }
            }
            var buffer = ByteBuffer(bytes: bytes)
            var decoder = FrameDecoder(maxBodyLength: 4096)
            while true {
                let before = buffer.readerIndex
                do throws(WireError) {
                    guard try decoder.decode(buffer: &buffer) != nil else { break }
                    #expect(buffer.readerIndex > before)
                } catch {
                    #expect(buffer.readerIndex == before)
                    break
                }
            }
        }
    }
}
