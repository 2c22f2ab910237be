import TallyCore

/// One generated event as plain numbers: no strings, no heap, cheap to keep in the retry window
/// and to render again byte for byte.
struct EventDraft {
    var tenant: Int
    var metric: WorkloadMetric
    /// The quantity in thousandths of a unit (every generated quantity has at most 3 places).
    var thousandths: Int64
    var timestamp: Int64
    var uuidHigh: UInt64
    var uuidLow: UInt64
    var endpoint: UInt8
    var region: UInt8
    var method: UInt8
    var status: UInt8

    var quantity: Quantity { Quantity(nanos: Int128(thousandths) * 1_000_000) }

    var id: String {
        var bytes: [UInt8] = []
        LineRenderer.appendUUID(high: uuidHigh, low: uuidLow, to: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The event this draft stands for; its `jsonLine` equals the rendered line.
    var event: UsageEvent {
        UsageEvent(
            tenant: WorkloadCatalog.tenants[tenant], metric: metric.name, quantity: quantity,
            timestamp: EventTime(microseconds: timestamp), id: id,
            properties: Properties([
                ("endpoint", WorkloadCatalog.endpoints[Int(endpoint)]),
                ("method", WorkloadCatalog.methods[Int(method)]),
                ("region", WorkloadCatalog.regions[Int(region)]),
                ("status", WorkloadCatalog.statuses[Int(status)]),
            ]))
    }

    /// Draws a new event at `timestamp`.
    static func draw(at timestamp: Int64, random: inout WorkloadRandom) -> EventDraft {
        let tenant = WorkloadCatalog.tenantChoice.sample(&random)
        let metric = WorkloadMetric(rawValue: WorkloadCatalog.metricChoice.sample(&random)) ?? .apiCalls
        let thousandths: Int64
        switch metric {
        case .apiCalls, .exports:
            thousandths = 1_000
        case .bytesOut:
            // Log-uniform whole bytes: a power-of-two band 2^0 ... 2^29, then uniform inside it.
            let band = Int64(random.next(below: 30))
            thousandths = random.next(in: (Int64(1) << band)...((Int64(1) << (band + 1)) - 1)) * 1_000
        case .computeMs:
            // Log-uniform thousandths of a millisecond: 0.001 ms up to 4,194.303 ms.
            let band = Int64(random.next(below: 22))
            thousandths = random.next(in: (Int64(1) << band)...((Int64(1) << (band + 1)) - 1))
        }
        var endpoint = UInt8(WorkloadCatalog.endpointChoice.sample(&random))
        let region = UInt8(WorkloadCatalog.regionChoice.sample(&random))
        var method = UInt8(WorkloadCatalog.methodChoice.sample(&random))
        let status = UInt8(WorkloadCatalog.statusChoice.sample(&random))
        if metric == .exports {
            endpoint = UInt8(WorkloadCatalog.exportsEndpoint)
            method = UInt8(WorkloadCatalog.exportsMethod)
        }
        // A random (version 4, RFC 9562 variant) UUID, as API gateways make request ids.
        let high = (random.next() & ~0xF000) | 0x4000
        let low = (random.next() & ~(0xC000_0000_0000_0000 as UInt64)) | 0x8000_0000_0000_0000
        return EventDraft(
            tenant: tenant, metric: metric, thousandths: thousandths, timestamp: timestamp, uuidHigh: high,
            uuidLow: low, endpoint: endpoint, region: region, method: method, status: status)
    }
}
