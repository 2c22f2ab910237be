internal import CNIOBoringSSL

/// SHA-256 and HMAC-SHA256 through BoringSSL's C API, the copy swift-nio-ssl builds into every
/// Tally binary for TLS.
///
/// Not swift-crypto: on Linux its `Crypto` module imports Foundation, and Foundation with its ICU
/// data is about 6 MiB of every agent's resident memory, a third of the agent's budget. Not the
/// system's libcrypto either (what this used before): the agent carries BoringSSL for TLS anyway,
/// and mapping OpenSSL's shared library beside it cost 1.4 MiB of the idle agent's RSS for two
/// functions. `CNIOBoringSSL` is swift-nio-ssl's own module, not one of its products: its API is
/// BoringSSL's, which keeps `SHA256_*` and `HMAC` stable, and the version moves with swift-nio-ssl's.
public enum SHA256Digest {
    /// The digest length in bytes.
    public static let byteCount = 32

    /// The SHA-256 of `bytes`, written into `out` (at least 32 bytes).
    public static func hash(_ bytes: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer) {
        precondition(out.count >= byteCount, "a SHA-256 digest needs 32 bytes")
        // The low-level calls: they cannot fail for a valid context, and the agent hashes every event.
        var context = SHA256_CTX()
        _ = SHA256_Init(&context)
        _ = SHA256_Update(&context, bytes.baseAddress, bytes.count)
        _ = SHA256_Final(out.baseAddress?.assumingMemoryBound(to: UInt8.self), &context)
    }

    /// The SHA-256 of `bytes`.
    public static func hash(_ bytes: some Collection<UInt8>) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: byteCount)
        out.withUnsafeMutableBytes { target in
            let done: Void? = bytes.withContiguousStorageIfAvailable { hash(UnsafeRawBufferPointer($0), into: target) }
            if done == nil { Array(bytes).withUnsafeBytes { hash($0, into: target) } }
        }
        return out
    }

    /// The lowercase hex SHA-256 of the UTF-8 bytes of `text`.
    public static func hex(_ text: String) -> String { Hex.encode(hash(Array(text.utf8))) }

    /// A SHA-256 fed in pieces (a file read in chunks).
    public final class Incremental {
        private var context = SHA256_CTX()

        public init() { _ = SHA256_Init(&context) }

        public func update(_ bytes: UnsafeRawBufferPointer) { _ = SHA256_Update(&context, bytes.baseAddress, bytes.count) }

        /// The digest of everything fed so far; the hasher is spent afterwards.
        public func finish() -> [UInt8] {
            var out = [UInt8](repeating: 0, count: SHA256Digest.byteCount)
            out.withUnsafeMutableBufferPointer { target in _ = SHA256_Final(target.baseAddress, &context) }
            return out
        }
    }

    /// HMAC-SHA256 of `message` under `key` (RFC 2104).
    public static func hmac(key: [UInt8], message: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: byteCount)
        var length: UInt32 = 0
        let made = key.withUnsafeBytes { keyBytes in
            message.withUnsafeBufferPointer { messageBytes in
                out.withUnsafeMutableBufferPointer { target in
                    HMAC(
                        EVP_sha256(), keyBytes.baseAddress, keyBytes.count, messageBytes.baseAddress,
                        messageBytes.count, target.baseAddress, &length)
                }
            }
        }
        // HMAC returns NULL only when BoringSSL cannot allocate; a proof that is all zeros would
        // then fail verification, never pass it.
        if made == nil || length != UInt32(byteCount) { return [UInt8](repeating: 0, count: byteCount) }
        return out
    }
}
