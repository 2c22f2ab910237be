import NIOCore
import PostgresNIO
import TallyCore

/// One array bind of a batch statement (`unnest($1::text[], …)`), written element by element
/// straight into PostgreSQL's binary array format.
///
/// postgres-nio encodes a Swift array only once it is whole, through its generic element path:
/// a batch's raw rows were first eleven Swift arrays (a `String` and two `ByteBuffer`s, each an
/// allocation, per event), then encoded one element at a time, then freed — 12% of a
/// collector's CPU in a cluster drain. This writes each element once into one buffer per column.
///
/// The format (PostgreSQL's `array_send`, which `array_recv` reads): the number of dimensions
/// (0 for an empty array, else 1), a has-nulls flag (0: no element is NULL here), the element
/// type's OID, then for the one dimension its length and lower bound (1), then each element as
/// its byte length (Int32) and its bytes in the element type's binary format; every integer
/// big-endian.
struct PostgresArrayColumn {
    private let arrayType: PostgresDataType
    private let elementType: PostgresDataType
    private var elements: ByteBuffer
    private(set) var count = 0

    /// An empty column of `element`s; `capacity`: the bytes to reserve for them.
    init(of element: Element, reservingBytes capacity: Int = 0) {
        arrayType = element.arrayType
        elementType = element.type
        elements = ByteBufferAllocator().buffer(capacity: Self.header + capacity)
        elements.writeRepeatingByte(0, count: Self.header)
    }

    /// The bytes of the header of a non-empty array, written last into the room kept before the
    /// elements (``bind()``).
    private static let header = 20

    /// The element types the batch statements bind.
    enum Element {
        case text, bytea, int8, int4, bool

        var type: PostgresDataType {
            switch self {
            case .text: .text
            case .bytea: .bytea
            case .int8: .int8
            case .int4: .int4
            case .bool: .bool
            }
        }

        var arrayType: PostgresDataType {
            switch self {
            case .text: .textArray
            case .bytea: .byteaArray
            case .int8: .int8Array
            case .int4: .int4Array
            case .bool: .boolArray
            }
        }
    }

    /// A `text` element: the string's UTF-8.
    mutating func append(_ text: String) {
        let utf8 = text.utf8
        elements.writeInteger(Int32(utf8.count))
        elements.writeBytes(utf8)
        count += 1
    }

    /// A `bytea` element.
    mutating func append(bytes: some Collection<UInt8>) {
        elements.writeInteger(Int32(bytes.count))
        elements.writeBytes(bytes)
        count += 1
    }

    /// A `bytea` element: a fingerprint's 16 bytes, big-endian (``Fingerprint/bytes``).
    mutating func append(_ fingerprint: Fingerprint) {
        elements.writeInteger(Int32(16))
        elements.writeInteger(fingerprint.high)
        elements.writeInteger(fingerprint.low)
        count += 1
    }

    /// An `int8` element.
    mutating func append(_ value: Int64) {
        elements.writeInteger(Int32(8))
        elements.writeInteger(value)
        count += 1
    }

    /// An `int4` element.
    mutating func append(_ value: Int32) {
        elements.writeInteger(Int32(4))
        elements.writeInteger(value)
        count += 1
    }

    /// A `bool` element.
    mutating func append(_ value: Bool) {
        elements.writeInteger(Int32(1))
        elements.writeInteger(UInt8(value ? 1 : 0))
        count += 1
    }

    /// The bind: the header written into the room kept for it, before the elements.
    consuming func bind() -> PostgresData {
        let start = elements.readerIndex
        elements.setInteger(Int32(count == 0 ? 0 : 1), at: start)
        elements.setInteger(Int32(0), at: start + 4)
        elements.setInteger(elementType.rawValue, at: start + 8)
        guard count > 0 else {
            // An empty array ends after the element type.
            return PostgresData(type: arrayType, formatCode: .binary, value: elements.getSlice(at: start, length: 12))
        }
        elements.setInteger(Int32(count), at: start + 12)
        elements.setInteger(Int32(1), at: start + 16)
        return PostgresData(type: arrayType, formatCode: .binary, value: elements)
    }
}
