/// The fixed vocabulary of the reference workload: tenants, metrics and property values, with
/// the integer weights that shape the traffic. Changing anything here changes every seed's bytes,
/// so treat it as part of the workload's format.
enum WorkloadCatalog {
    /// Tenants `t0001` … `t1000`; `t0001` is the busiest.
    static let tenantCount = 1_000
    static let tenants: [String] = (1...tenantCount).map { rank in
        let digits = String(rank)
        return "t" + String(repeating: "0", count: 4 - digits.count) + digits
    }

    /// Zipf with s = 1: tenant of rank k weighs ⌊10¹² / k⌋. Integer weights and an integer
    /// cumulative table, so libm never decides which tenant an event belongs to.
    static let tenantChoice = WeightedChoice(weights: (1...tenantCount).map { 1_000_000_000_000 / UInt64($0) })

    /// The metrics, in the order of ``WorkloadMetric``'s raw values.
    static let metrics = ["api_calls", "bytes_out", "compute_ms", "exports"]
    /// Per 10,000 events: 80% api_calls, 12% bytes_out, 7.9% compute_ms, 0.1% exports.
    static let metricChoice = WeightedChoice(weights: [8_000, 1_200, 790, 10])

    static let endpoints = [
        "/api/v1/search", "/api/v1/users", "/api/v1/users/{id}", "/api/v1/orders", "/api/v1/orders/{id}",
        "/api/v1/products", "/api/v1/products/{id}", "/api/v1/cart", "/api/v1/checkout", "/api/v1/payments",
        "/api/v1/invoices", "/api/v1/reports", "/api/v1/exports", "/api/v1/webhooks", "/api/v1/auth/token",
        "/api/v1/files", "/api/v1/files/{id}", "/api/v1/events", "/api/v1/recommendations", "/api/v1/health",
    ]
    /// The endpoint of every `exports` event.
    static let exportsEndpoint = 12
    /// Earlier endpoints are busier: weight 21 - i.
    static let endpointChoice = WeightedChoice(weights: (0..<20).map { UInt64(21 - $0) })

    static let regions = ["us-east-1", "us-west-2", "eu-west-1", "ap-southeast-1"]
    static let regionChoice = WeightedChoice(weights: [45, 20, 25, 10])

    static let methods = ["GET", "POST", "PUT", "DELETE"]
    static let methodChoice = WeightedChoice(weights: [60, 25, 10, 5])
    /// The method of every `exports` event.
    static let exportsMethod = 1

    static let statuses = ["200", "201", "400", "404", "500"]
    /// Per mille: 82% 200, 8% 201, 4% 400, 4% 404, 2% 500.
    static let statusChoice = WeightedChoice(weights: [820, 80, 40, 40, 20])
}

/// The four metrics of the reference workload.
public enum WorkloadMetric: Int, Sendable, CaseIterable {
    /// One per request: quantity 1. Most events.
    case apiCalls = 0
    /// Response bytes: whole numbers spread from 1 to about 10⁹ (log-uniform).
    case bytesOut = 1
    /// CPU time: exact decimals with up to three places, 0.001 to about 4,194.304.
    case computeMs = 2
    /// Data exports: quantity 1, rare.
    case exports = 3

    /// The metric's name in events.
    public var name: String { WorkloadCatalog.metrics[rawValue] }
}
