/// The canonical, length-prefixed bytes of an event's natural key, which its ``Fingerprint``
/// hashes. Two events share these bytes exactly when they are the same logical event.
///
/// Layout (all integers big-endian; `str` is a u32 byte length then the UTF-8 bytes):
/// ```
/// "TFP1"                           magic and version, 4 bytes
/// form                             u8: 0x01 keyed by id, 0x02 keyed by every field
/// str tenant, str metric
/// timestamp                        i64: microseconds since the Unix epoch, UTC
/// form 0x01:  str id
/// form 0x02:  str quantity         its canonical decimal text (Quantity.description)
///             u32 property count, then per property in UTF-8 byte order of the key:
///             str key, str value
/// ```
public enum CanonicalEncoding {
    public static let magic: [UInt8] = Array("TFP1".utf8)
    public static let formKeyedById: UInt8 = 0x01
    public static let formKeyedByFields: UInt8 = 0x02

    public static func bytes(of event: UsageEvent) -> [UInt8] {
        var out: [UInt8] = []
        append(event, to: &out)
        return out
    }

    public static func append(_ event: UsageEvent, to out: inout [UInt8]) {
        out.append(contentsOf: magic)
        out.append(event.id == nil ? formKeyedByFields : formKeyedById)
        appendString(event.tenant, to: &out)
        appendString(event.metric, to: &out)
        appendUInt64(UInt64(bitPattern: event.timestamp.microseconds), to: &out)
        if let id = event.id {
            appendString(id, to: &out)
            return
        }
        appendString(event.quantity.description, to: &out)
        appendUInt32(UInt32(event.properties.count), to: &out)
        for property in event.properties {
            appendString(property.key, to: &out)
            appendString(property.value, to: &out)
        }
    }

    static func appendString(_ value: String, to out: inout [UInt8]) {
        appendUInt32(UInt32(value.utf8.count), to: &out)
        out.append(contentsOf: value.utf8)
    }

    static func appendUInt32(_ value: UInt32, to out: inout [UInt8]) {
        for shift in stride(from: 24, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: value >> UInt32(shift))) }
    }

    static func appendUInt64(_ value: UInt64, to out: inout [UInt8]) {
        for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: value >> UInt64(shift))) }
    }
}
