import Crypto
import Testing
import TallyCore

@Suite("SHA-256 and HMAC through BoringSSL")
struct SHA256DigestTests {
    @Test func theDigestEqualsSwiftCryptosForEveryLengthAroundTheBlockSize() {
        var generator = SplitMix64(seed: 12)
        for length in [0, 1, 55, 56, 63, 64, 65, 119, 120, 127, 128, 129, 1000, 4097] {
            let bytes = (0..<length).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
            #expect(SHA256Digest.hash(bytes) == Array(Crypto.SHA256.hash(data: bytes)), "length \(length)")
        }
    }

    @Test func theKnownAnswers() {
        // FIPS 180-2 appendix B.1 and the empty message.
        #expect(SHA256Digest.hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(SHA256Digest.hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    }

    @Test func hmacMatchesRFC4231() {
        // RFC 4231 test cases 1, 2 and 6 (a key longer than the block is hashed first).
        let cases: [([UInt8], [UInt8], String)] = [
            (
                [UInt8](repeating: 0x0b, count: 20), Array("Hi There".utf8),
                "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
            ),
            (
                Array("Jefe".utf8), Array("what do ya want for nothing?".utf8),
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
            ),
            (
                [UInt8](repeating: 0xaa, count: 131), Array("Test Using Larger Than Block-Size Key - Hash Key First".utf8),
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
            ),
        ]
        for (key, message, expected) in cases {
            #expect(Hex.encode(SHA256Digest.hmac(key: key, message: message)) == expected)
        }
    }

    @Test func hmacEqualsSwiftCryptos() {
        var generator = SplitMix64(seed: 7)
        for length in [0, 16, 32, 64, 65, 200] {
            let key = (0..<length).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
            let message = (0..<(length * 3)).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
            let reference = HMAC<Crypto.SHA256>.authenticationCode(for: message, using: SymmetricKey(data: key))
            #expect(SHA256Digest.hmac(key: key, message: message) == Array(reference))
        }
    }
}
