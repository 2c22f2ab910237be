import NIOCore
import TallyCore

extension ByteBuffer {
    /// Writes `fingerprint` as its 32 lowercase hex digits (the text of
    /// ``Fingerprint/description``) straight into the buffer, with no intermediate string.
    mutating func writeFingerprintHex(_ fingerprint: Fingerprint) {
        writeWithUnsafeMutableBytes(minimumWritableBytes: 32) { raw in
            func put(_ value: UInt64, at offset: Int) {
                for nibble in 0..<16 {
                    let digit = UInt8(truncatingIfNeeded: value >> UInt64(60 - 4 * nibble)) & 0x0F
                    raw[offset + nibble] = digit < 10 ? 0x30 + digit : 0x57 + digit
                }
            }
            put(fingerprint.high, at: 0)
            put(fingerprint.low, at: 16)
            return 32
        }
    }
}
