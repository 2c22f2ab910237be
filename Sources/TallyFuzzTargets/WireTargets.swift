import NIOCore
import Synchronization
import TallyCore
import TallyWire

/// The frame decoder over a stream of bytes: frames until it needs more or refuses; then the
/// same with every frame's CRC32C trailer made right, because a fuzzer cannot forge checksums
/// and would otherwise never get past the first changed byte into the bodies.
/// Checks: a refusal or "need more" leaves the reader index alone; every frame re-encodes to
/// exactly the bytes it was decoded from (``Frame``'s guarantee); every proper prefix of a
/// frame's bytes is "need more", never a frame or an error.
public func fuzzFrameDecoder(_ bytes: UnsafeRawBufferPointer) {
    decodeFrames(ByteBuffer(bytes: bytes))
    var fixed = Array(bytes)
    if fixFrameChecksums(&fixed) { decodeFrames(ByteBuffer(bytes: fixed)) }
}

/// Rewrites the trailer of each whole frame in `bytes` (as far as the header lengths chain) to
/// the CRC32C of its header and body; true when anything changed.
private func fixFrameChecksums(_ bytes: inout [UInt8]) -> Bool {
    var changed = false
    var start = 0
    while start + FrameLayout.headerSize <= bytes.count {
        let length = (5..<9).reduce(0) { $0 << 8 | Int(bytes[start + $1]) }
        let trailer = start + FrameLayout.headerSize + length
        guard trailer + FrameLayout.trailerSize <= bytes.count else { break }
        let crc = bytes.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[start..<trailer])) }
        for index in 0..<4 {
            let byte = UInt8(truncatingIfNeeded: crc >> (24 - 8 * index))
            if bytes[trailer + index] != byte {
                bytes[trailer + index] = byte
                changed = true
            }
        }
        start = trailer + FrameLayout.trailerSize
    }
    return changed
}

private func decodeFrames(_ input: ByteBuffer) {
    var buffer = input
    var decoder = FrameDecoder()
    while true {
        let before = buffer.readerIndex
        let unread = buffer  // the bytes before decoding (`getSlice` reads only unread bytes)
        let frame: Frame?
        do {
            frame = try decoder.decode(buffer: &buffer)
        } catch {
            require(buffer.readerIndex == before, "a refused frame moved the reader index")
            return
        }
        guard let frame else {
            require(buffer.readerIndex == before, "'need more' moved the reader index")
            return
        }
        let length = buffer.readerIndex - before
        guard let consumed = unread.getSlice(at: before, length: length) else { finding("the consumed bytes are gone") }
        let encoded: ByteBuffer
        do {
            encoded = try FrameEncoder().encode(frame)
        } catch {
            finding("a decoded \(frame.type) frame does not encode: \(error)")
        }
        require(encoded == consumed, "the \(frame.type) frame re-encodes to other bytes")
        var prefix = consumed.getSlice(at: consumed.readerIndex, length: length - 1) ?? ByteBuffer()
        var fresh = FrameDecoder()
        let early = Result { () throws(WireError) in try fresh.decode(buffer: &prefix) }
        require((try? early.get()) == .some(nil), "a prefix of a \(frame.type) frame is not 'need more': \(early)")
    }
}

/// The zstd contexts, made once instead of per input; used only under `payloadTurn` (the
/// corpus replay runs targets on several threads).
nonisolated(unsafe) private let payloadCodecs = PayloadCodecs()
private let payloadTurn = Mutex(())

private struct PayloadCodecs {
    let decoder = try? BatchPayloadDecoder()
    let encoders = [try? BatchPayloadEncoder(compression: .none), try? BatchPayloadEncoder(compression: .zstd(level: 1))]
}

/// The batch payload decoder (standard limits). Checks: the header's declared event count is
/// the number decoded; the events re-encoded, raw and with zstd, decode to the same events.
public func fuzzBatchPayloadDecoder(_ bytes: UnsafeRawBufferPointer) {
    payloadTurn.withLock { _ in decodePayload(bytes, payloadCodecs) }
}

private func decodePayload(_ bytes: UnsafeRawBufferPointer, _ codecs: PayloadCodecs) {
    guard let decoder = codecs.decoder else { finding("cannot set up zstd") }
    let payload = ByteBuffer(bytes: bytes)
    let events: [UsageEvent]
    do {
        events = try decoder.decode(payload)
    } catch {
        return
    }
    let declared = BatchPayloadDecoder.declaredEventCount(payload)
    require(declared.map(Int.init) == events.count, "the header declares \(String(describing: declared)) events, \(events.count) decoded")
    for encoder in codecs.encoders {
        guard let encoder else { finding("cannot set up zstd") }
        do {
            let again = try decoder.decode(try encoder.encode(events))
            require(again == events, "\(events.count) events come back different after \(encoder.compression) encoding")
        } catch {
            finding("\(events.count) decoded events, encoded with \(encoder.compression), do not decode: \(error)")
        }
    }
}
