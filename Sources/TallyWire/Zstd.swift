internal import CZstd

/// A zstd failure, with the library's own explanation.
public enum ZstdError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The library refused the input (corrupt data, a bad checksum, truncated input).
    case library(String)
    /// The decompressed size would exceed the caller's cap: a decompression bomb, refused
    /// before its output was allocated.
    case outputLimitExceeded(limit: Int)
    /// The input ended inside a frame.
    case truncated
    /// Bytes follow the frame (another frame, or anything else): SPEC §5.1 allows one frame.
    case trailingBytes(Int)

    public var description: String {
        switch self {
        case .library(let message): "zstd: \(message)"
        case .outputLimitExceeded(let limit): "zstd: the decompressed size exceeds the limit of \(limit) bytes"
        case .truncated: "zstd: the input ends inside a frame"
        case .trailingBytes(let count): "zstd: \(count) bytes follow the frame (one frame is allowed)"
        }
    }

    static func check(_ code: Int) throws(ZstdError) {
        if ZSTD_isError(code) != 0 { throw .library(String(cString: ZSTD_getErrorName(code))) }
    }
}

/// A zstd compression context, reused across calls. Each frame carries its content size and a
/// content checksum, so the other side can refuse an oversized frame up front and detect
/// corruption. Not thread-safe: one per task.
public final class ZstdCompressor {
    private let context: OpaquePointer
    public let level: Int32

    public init(level: Int32 = 1) throws(ZstdError) {
        guard let context = ZSTD_createCCtx() else { throw .library("cannot allocate a compression context") }
        self.context = context
        self.level = level
        try ZstdError.check(ZSTD_CCtx_setParameter(context, ZSTD_c_compressionLevel, level))
        try ZstdError.check(ZSTD_CCtx_setParameter(context, ZSTD_c_checksumFlag, 1))
    }

    deinit { ZSTD_freeCCtx(context) }

    /// One zstd frame holding `input`.
    public func compress(_ input: some ReadableBytes) throws(ZstdError) -> [UInt8] {
        do {
            return try input.withUnsafeBytes { source in
                let bound = ZSTD_compressBound(source.count)
                var output = [UInt8](repeating: 0, count: bound)
                let written = output.withUnsafeMutableBytes { destination in
                    ZSTD_compress2(context, destination.baseAddress, bound, source.baseAddress, source.count)
                }
                try ZstdError.check(written)
                output.removeLast(output.count - written)
                return output
            }
        } catch let error as ZstdError {
            throw error
        } catch {
            throw .library("\(error)")
        }
    }
}

/// A zstd decompression context with a hard cap on the output size. A frame that declares a
/// larger content size is refused before any output is allocated; a frame that hides its size
/// is decoded in steps and refused as soon as its output passes the cap.
public final class ZstdDecompressor {
    private let context: OpaquePointer

    public init() throws(ZstdError) {
        guard let context = ZSTD_createDCtx() else { throw .library("cannot allocate a decompression context") }
        self.context = context
        // Refuse frames that need a window over 128 MiB, whatever their content size.
        try ZstdError.check(ZSTD_DCtx_setParameter(context, ZSTD_d_windowLogMax, 27))
    }

    deinit { ZSTD_freeDCtx(context) }

    /// The content of the one frame that is `input`, at most `maxOutputSize` bytes. Input that is
    /// not exactly one frame (a second frame, or other bytes after it) is refused.
    public func decompress(_ input: some ReadableBytes, maxOutputSize: Int) throws(ZstdError) -> [UInt8] {
        do {
            return try input.withUnsafeBytes { source throws(ZstdError) in
                try decompress(source, maxOutputSize: maxOutputSize)
            }
        } catch let error as ZstdError {
            throw error
        } catch {
            throw .library("\(error)")
        }
    }

    private func decompress(_ source: UnsafeRawBufferPointer, maxOutputSize: Int) throws(ZstdError) -> [UInt8] {
        guard let base = source.baseAddress, source.count > 0 else { throw .truncated }
        // A declared content size over the cap is refused before allocating anything.
        let declared = ZSTD_getFrameContentSize(base, source.count)
        if declared == ZSTD_CONTENTSIZE_ERROR { throw .library("not a zstd frame") }
        // The frame's own length, from its headers and block headers (no decoding): whatever
        // follows it is refused before anything is decompressed.
        let frameLength = ZSTD_findFrameCompressedSize(base, source.count)
        if ZSTD_isError(frameLength) == 0, frameLength < source.count { throw .trailingBytes(source.count - frameLength) }
        var capacity = 64 * 1024
        if declared != ZSTD_CONTENTSIZE_UNKNOWN {
            if declared > UInt64(maxOutputSize) { throw .outputLimitExceeded(limit: maxOutputSize) }
            capacity = Int(declared)
        }
        capacity = max(1, min(capacity, maxOutputSize))
        ZSTD_DCtx_reset(context, ZSTD_reset_session_only)
        var output = [UInt8](repeating: 0, count: capacity)
        var produced = 0
        var inBuffer = ZSTD_inBuffer(src: base, size: source.count, pos: 0)
        var lastHint = 0
        while true {
            if produced == output.count {
                if output.count >= maxOutputSize {
                    // Full at the cap: one more byte of output means a bomb.
                    var probe: UInt8 = 0
                    let more = withUnsafeMutablePointer(to: &probe) { pointer in
                        var outBuffer = ZSTD_outBuffer(dst: pointer, size: 1, pos: 0)
                        let hint = ZSTD_decompressStream(context, &outBuffer, &inBuffer)
                        return (hint, outBuffer.pos)
                    }
                    try ZstdError.check(more.0)
                    if more.1 > 0 { throw .outputLimitExceeded(limit: maxOutputSize) }
                    lastHint = more.0
                    if inBuffer.pos == inBuffer.size { break }
                    continue
                }
                output.append(contentsOf: repeatElement(0, count: min(output.count, maxOutputSize - output.count)))
            }
            let (hint, written) = output.withUnsafeMutableBytes { destination in
                var outBuffer = ZSTD_outBuffer(
                    dst: destination.baseAddress.map { $0 + produced }, size: destination.count - produced, pos: 0)
                let hint = ZSTD_decompressStream(context, &outBuffer, &inBuffer)
                return (hint, outBuffer.pos)
            }
            try ZstdError.check(hint)
            produced += written
            lastHint = hint
            if inBuffer.pos == inBuffer.size && hint == 0 { break }
            if inBuffer.pos == inBuffer.size && written == 0 && produced < output.count { break }
        }
        if lastHint != 0 { throw .truncated }
        output.removeLast(output.count - produced)
        return output
    }
}

/// Bytes that can be read in place.
public protocol ReadableBytes {
    func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R
}

extension Array: ReadableBytes where Element == UInt8 {}
extension ArraySlice: ReadableBytes where Element == UInt8 {}
