/// The 128-bit identity of a logical event: the first 16 bytes of SHA-256 over the event's
/// ``CanonicalEncoding``. The same logical event has the same fingerprint on every retry, in
/// every process and in every language; `protocol/FINGERPRINT.md` defines it byte for byte.
public struct Fingerprint: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// The first 8 bytes, big-endian.
    public let high: UInt64
    /// The last 8 bytes, big-endian.
    public let low: UInt64

    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// The fingerprint of an event.
    public init(of event: UsageEvent) {
        var scratch: [UInt8] = []
        self.init(of: event, scratch: &scratch)
    }

    /// The fingerprint of an event, reusing `scratch` for the canonical bytes.
    public init(of event: UsageEvent, scratch: inout [UInt8]) {
        scratch.removeAll(keepingCapacity: true)
        CanonicalEncoding.append(event, to: &scratch)
        self.init(canonicalBytes: scratch)
    }

    /// The fingerprint of an event read as a ``PlainEvent`` from `line`: the same as that of the
    /// ``UsageEvent`` the line decodes to.
    public init(of event: PlainEvent, in line: UnsafeBufferPointer<UInt8>, scratch: inout [UInt8]) {
        scratch.removeAll(keepingCapacity: true)
        CanonicalEncoding.append(event, in: line, to: &scratch)
        self.init(canonicalBytes: scratch)
    }

    /// The fingerprint of canonical bytes already made.
    public init(canonicalBytes: [UInt8]) {
        var digest: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        self = withUnsafeMutableBytes(of: &digest) { raw in
            canonicalBytes.withUnsafeBytes { SHA256Digest.hash($0, into: raw) }
            return Fingerprint(raw: UnsafeRawBufferPointer(raw))
        }
    }

    /// The 16 bytes, big-endian.
    public var bytes: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(16)
        out.appendBigEndian(high, bytes: 8)
        out.appendBigEndian(low, bytes: 8)
        return out
    }

    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count == 16 else { return nil }
        let loaded = bytes.withContiguousStorageIfAvailable { buffer in
            Fingerprint(raw: UnsafeRawBufferPointer(buffer))
        }
        self = loaded ?? Array(bytes).withUnsafeBytes { Fingerprint(raw: $0) }
    }

    private init(raw: UnsafeRawBufferPointer) {
        self.init(high: raw.loadBigEndian(at: 0, bytes: 8), low: raw.loadBigEndian(at: 8, bytes: 8))
    }

    /// 32 lowercase hex digits.
    public var description: String { Hex.encode(bytes) }

    public init?(hex: String) {
        guard let bytes = Hex.decode(hex), let fingerprint = Fingerprint(bytes: bytes) else { return nil }
        self = fingerprint
    }

    public static func < (lhs: Fingerprint, rhs: Fingerprint) -> Bool {
        (lhs.high, lhs.low) < (rhs.high, rhs.low)
    }
}

/// Lowercase hexadecimal text of bytes.
public enum Hex {
    public static func encode(_ bytes: some Sequence<UInt8>) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// The bytes of hex text (either case, whitespace ignored), or nil if it is not hex.
    public static func decode(_ text: String) -> [UInt8]? {
        var out: [UInt8] = []
        var pending: UInt8?
        for byte in text.utf8 {
            let nibble: UInt8
            switch byte {
            case 0x30...0x39: nibble = byte - 0x30
            case 0x41...0x46: nibble = byte - 0x41 + 10
            case 0x61...0x66: nibble = byte - 0x61 + 10
            case 0x20, 0x0A, 0x0D, 0x09: continue
            default: return nil
            }
            if let high = pending {
                out.append(high << 4 | nibble)
                pending = nil
            } else {
                pending = nibble
            }
        }
        return pending == nil ? out : nil
    }
}
