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
        out.appendString32(event.tenant)
        out.appendString32(event.metric)
        out.appendBigEndian(UInt64(bitPattern: event.timestamp.microseconds), bytes: 8)
        if let id = event.id {
            out.appendString32(id)
            return
        }
        out.appendString32(event.quantity.description)
        out.appendBigEndian(UInt64(event.properties.count), bytes: 4)
        for property in event.properties {
            out.appendString32(property.key)
            out.appendString32(property.value)
        }
    }

    /// ``append(_:to:)`` for an event read as a ``PlainEvent`` from `line`: the same bytes.
    public static func append(_ event: PlainEvent, in line: UnsafeBufferPointer<UInt8>, to out: inout [UInt8]) {
        func string32(_ range: Range<Int>) {
            out.appendBigEndian(UInt64(range.count), bytes: 4)
            out.append(contentsOf: UnsafeBufferPointer(rebasing: line[range]))
        }
        out.append(contentsOf: magic)
        out.append(event.id == nil ? formKeyedByFields : formKeyedById)
        string32(event.tenant)
        string32(event.metric)
        out.appendBigEndian(UInt64(bitPattern: event.timestamp.microseconds), bytes: 8)
        if let id = event.id {
            string32(id)
            return
        }
        out.appendString32(event.quantity.description)
        out.appendBigEndian(UInt64(event.properties.count), bytes: 4)
        for property in event.properties {
            string32(property.key)
            string32(property.value)
        }
    }
}
