internal import CTallyCRC32C

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as used by iSCSI, ext4 and RocksDB.
/// Spool records and wire frames both carry it. `CRC32C.checksum("123456789") == 0xE3069283`.
///
/// Written here rather than imported: no package on the allowed list provides CRC-32C. The CPU's
/// CRC-32C instruction does the work where there is one (the small C target `CTallyCRC32C`: the
/// table form below showed up in the agent's profile at a million events a second); this
/// slicing-by-8 form is the fallback, and the reference the tests hold the instruction to.
public struct CRC32C: Sendable {
    public private(set) var value: UInt32 = 0

    public init() {}

    public static func checksum(_ bytes: some Sequence<UInt8>) -> UInt32 {
        var crc = CRC32C()
        crc.update(Array(bytes))
        return crc.value
    }

    public static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        var crc = CRC32C()
        crc.update(bytes)
        return crc.value
    }

    public mutating func update(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { update($0) }
    }

    /// Whether the CPU's instruction is used (checked once).
    static let usesHardware = tally_crc32c_hardware() != 0

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard Self.usesHardware, let base = bytes.baseAddress else {
            updateWithTables(bytes)
            return
        }
        value = ~tally_crc32c_update(~value, base.assumingMemoryBound(to: UInt8.self), bytes.count)
    }

    /// The table-driven form: for CPUs without the instruction, and the tests' reference.
    mutating func updateWithTables(_ bytes: UnsafeRawBufferPointer) {
        var crc = ~value
        var index = 0
        let count = bytes.count
        Self.tables.withUnsafeBufferPointer { t in
            while count - index >= 8 {
                let low =
                    crc
                    ^ (UInt32(bytes[index]) | UInt32(bytes[index + 1]) << 8
                        | UInt32(bytes[index + 2]) << 16 | UInt32(bytes[index + 3]) << 24)
                crc =
                    t[7 * 256 + Int(low & 0xFF)] ^ t[6 * 256 + Int((low >> 8) & 0xFF)]
                    ^ t[5 * 256 + Int((low >> 16) & 0xFF)] ^ t[4 * 256 + Int(low >> 24)]
                    ^ t[3 * 256 + Int(bytes[index + 4])] ^ t[2 * 256 + Int(bytes[index + 5])]
                    ^ t[1 * 256 + Int(bytes[index + 6])] ^ t[Int(bytes[index + 7])]
                index += 8
            }
            while index < count {
                crc = t[Int((crc ^ UInt32(bytes[index])) & 0xFF)] ^ (crc >> 8)
                index += 1
            }
        }
        value = ~crc
    }

    /// Eight 256-entry tables for slicing-by-8, flattened.
    private static let tables: [UInt32] = {
        var table = [UInt32](repeating: 0, count: 8 * 256)
        for i in 0..<256 {
            var crc = UInt32(i)
            for _ in 0..<8 { crc = (crc & 1) != 0 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
            table[i] = crc
        }
        for i in 0..<256 {
            for slice in 1..<8 {
                let previous = table[(slice - 1) * 256 + i]
                table[slice * 256 + i] = (previous >> 8) ^ table[Int(previous & 0xFF)]
            }
        }
        return table
    }()
}
