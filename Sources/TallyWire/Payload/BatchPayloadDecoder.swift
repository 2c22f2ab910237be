public import NIOCore
public import TallyCore

/// Decodes batch payloads into events, within limits checked before any large allocation: the
/// event count and the declared decompressed size are checked before zstd runs, and zstd itself
/// stops at the declared size. Any failure is a ``WireError`` (`too_many_events`,
/// `payload_too_large` or `malformed_payload`), never a crash. Holds a zstd context: one
/// decoder per task.
public struct BatchPayloadDecoder {
    public var maxEvents: Int
    public var maxDecompressedBytes: Int
    private let decompressor: ZstdDecompressor

    public init(limits: SessionLimits = .standard) throws(WireError) {
        self.maxEvents = Int(limits.maxEventsPerBatch)
        self.maxDecompressedBytes = Int(limits.maxDecompressedBytes)
        do {
            decompressor = try ZstdDecompressor()
        } catch {
            throw WireError(.internalError, "cannot set up zstd: \(error)")
        }
    }

    /// The number of events a payload declares, read from its header alone (the collector
    /// needs it to count a malformed batch as rejected), or nil when even the header is bad.
    public static func declaredEventCount(_ payload: ByteBuffer) -> UInt32? {
        guard payload.getInteger(at: payload.readerIndex, as: UInt8.self) == BatchPayloadLayout.version else { return nil }
        return payload.getInteger(at: payload.readerIndex + 1, as: UInt32.self)
    }

    public func decode(_ payload: ByteBuffer) throws(WireError) -> [UsageEvent] {
        var payload = payload
        func malformed(_ what: String) -> WireError { WireError(.malformedPayload, "batch payload: \(what)") }
        guard let version = payload.readInteger(as: UInt8.self), let count = payload.readInteger(as: UInt32.self),
            let rawEncoding = payload.readInteger(as: UInt8.self), let rawLength = payload.readInteger(as: UInt32.self),
            let storedLength = payload.readInteger(as: UInt32.self)
        else { throw malformed("shorter than its \(BatchPayloadLayout.headerSize)-byte header") }
        guard version == BatchPayloadLayout.version else {
            throw WireError(.unsupportedVersion, "batch payload version \(version) is not supported")
        }
        guard let encoding = BatchPayloadLayout.Encoding(rawValue: rawEncoding) else {
            throw malformed("unknown columns encoding \(rawEncoding)")
        }
        guard Int(count) <= maxEvents else {
            throw WireError(.tooManyEvents, "a batch of \(count) events exceeds the limit of \(maxEvents)")
        }
        guard Int(rawLength) <= maxDecompressedBytes else {
            throw WireError(.payloadTooLarge, "a batch of \(rawLength) bytes decompressed exceeds the limit of \(maxDecompressedBytes)")
        }
        guard var stored = payload.readSlice(length: Int(storedLength)) else {
            throw malformed("the columns section is cut short")
        }
        var columns: ByteBuffer
        switch encoding {
        case .raw:
            guard storedLength == rawLength else { throw malformed("raw columns whose two lengths differ") }
            columns = stored
        case .zstd:
            let bytes: [UInt8]
            do throws(ZstdError) {
                bytes = try decompressor.decompress(stored, maxOutputSize: Int(rawLength))
            } catch .outputLimitExceeded {
                throw WireError(.payloadTooLarge, "the columns decompress to more than the declared \(rawLength) bytes")
            } catch {
                throw malformed("\(error)")
            }
            guard bytes.count == Int(rawLength) else {
                throw malformed("the columns decompress to \(bytes.count) bytes, not the declared \(rawLength)")
            }
            columns = ByteBuffer(bytes: bytes)
            stored.clear()
        }
        var reader = ColumnReader(buffer: columns, count: Int(count))
        let events = try reader.events(uuids: &payload)
        guard payload.readableBytes == 0 else { throw malformed("\(payload.readableBytes) bytes after the UUID section") }
        return events
    }
}

/// Reads the columns section; every count is checked against the bytes that remain before
/// anything is reserved for it.
struct ColumnReader {
    var buffer: ByteBuffer
    let count: Int

    private func malformed(_ what: String) -> WireError { WireError(.malformedPayload, "batch payload: \(what)") }

    mutating func varint(_ what: String) throws(WireError) -> UInt64 {
        guard let value = buffer.readVarint() else { throw malformed("bad or missing varint in the \(what)") }
        return value
    }

    mutating func index(_ what: String, below limit: Int) throws(WireError) -> Int {
        let value = try varint(what)
        guard value < UInt64(limit) else { throw malformed("index \(value) out of range in the \(what)") }
        return Int(value)
    }

    mutating func table(_ what: String) throws(WireError) -> [String] {
        let size = try varint("\(what) table size")
        guard size <= UInt64(buffer.readableBytes) else { throw malformed("the \(what) table claims \(size) entries") }
        var entries: [String] = []
        entries.reserveCapacity(min(Int(size), 4096))  // no amplification from a claimed size
        for _ in 0..<size {
            guard let entry = buffer.readVarintString() else { throw malformed("bad string in the \(what) table") }
            entries.append(entry)
        }
        return entries
    }

    mutating func events(uuids: inout ByteBuffer) throws(WireError) -> [UsageEvent] {
        // Every event takes at least 4 bytes of columns (tenant, metric, time, flags, quantity).
        guard count <= buffer.readableBytes / 4 + 1 else { throw malformed("\(count) events cannot fit the columns") }
        let tenants = try table("tenant")
        let metrics = try table("metric")
        let keys = try table("property key")
        for (a, b) in zip(keys, keys.dropFirst()) where !a.utf8.lexicographicallyPrecedes(b.utf8) {
            throw malformed("property keys are not distinct and in byte order")
        }
        var values: [[String]] = []
        for key in keys { values.append(try table("values of '\(key)'")) }
        if count > 0 && (tenants.isEmpty || metrics.isEmpty) { throw malformed("events without a tenant or metric table") }

        var tenantColumn: [Int] = []
        tenantColumn.reserveCapacity(count)
        for _ in 0..<count { tenantColumn.append(try index("tenant column", below: tenants.count)) }
        var metricColumn: [Int] = []
        metricColumn.reserveCapacity(count)
        for _ in 0..<count { metricColumn.append(try index("metric column", below: metrics.count)) }
        var times: [Int64] = []
        times.reserveCapacity(count)
        var previous: Int64 = 0
        for _ in 0..<count {
            previous = previous &+ ZigZag.decode(try varint("time column"))
            times.append(previous)
        }
        guard let flags = buffer.readBytes(length: count) else { throw malformed("the flags column is cut short") }
        var quantities: [Quantity] = []
        quantities.reserveCapacity(count)
        for position in 0..<count {
            guard let raw = buffer.readVarint128() else { throw malformed("bad varint in the quantity column") }
            let value = ZigZag.decode(raw)
            if flags[position] & BatchPayloadLayout.fractionalQuantity == 0 {
                let (nanos, overflow) = value.multipliedReportingOverflow(by: Quantity.nanosPerUnit)
                guard !overflow else { throw malformed("quantity \(value) units is out of range") }
                quantities.append(Quantity(nanos: nanos))
            } else {
                guard value % Quantity.nanosPerUnit != 0 else { throw malformed("a whole quantity sent as nano-units") }
                quantities.append(Quantity(nanos: value))
            }
        }
        var propertyColumns: [[Int]] = []
        for key in values.indices {
            var column: [Int] = []
            column.reserveCapacity(count)
            for _ in 0..<count { column.append(try index("property column", below: values[key].count + 1)) }
            propertyColumns.append(column)
        }
        var events: [UsageEvent] = []
        events.reserveCapacity(count)
        for position in 0..<count {
            // Building the events is most of a batch's decoding (~1 µs each): a read waiting
            // for this core runs in between (YieldPoint).
            YieldPoint.after(step: position, every: 64)
            let flag = flags[position]
            guard flag & ~(BatchPayloadLayout.fractionalQuantity | 0x03) == 0 else {
                throw malformed("reserved bits set in the flags of event \(position)")
            }
            var id: String?
            switch BatchPayloadLayout.IdKind(rawValue: flag & 0x03) ?? .none {
            case .none: id = nil
            case .uuidLower, .uuidUpper:
                guard let bytes = uuids.readBytes(length: 16) else { throw malformed("the UUID section is cut short") }
                id = UUIDText.format(bytes, uppercase: flag & 0x03 == BatchPayloadLayout.IdKind.uuidUpper.rawValue)
            case .text:
                guard let text = buffer.readVarintString() else { throw malformed("bad string in the id column") }
                guard UUIDText.parse(text) == nil else { throw malformed("a canonical UUID sent as text") }
                id = text
            }
            var elements: [Property] = []
            elements.reserveCapacity(keys.count)
            for key in keys.indices where propertyColumns[key][position] > 0 {
                elements.append(Property(key: keys[key], value: values[key][propertyColumns[key][position] - 1]))
            }
            // The keys table was checked distinct and in byte order above.
            guard let properties = Properties(inOrder: elements) else { throw malformed("property keys are not distinct and in byte order") }
            events.append(
                UsageEvent(
                    tenant: tenants[tenantColumn[position]], metric: metrics[metricColumn[position]],
                    quantity: quantities[position], timestamp: EventTime(microseconds: times[position]), id: id,
                    properties: properties))
        }
        guard buffer.readableBytes == 0 else { throw malformed("\(buffer.readableBytes) bytes after the last column") }
        return events
    }
}
