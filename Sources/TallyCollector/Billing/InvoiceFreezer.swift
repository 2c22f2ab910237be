public import Logging
public import ServiceLifecycle

/// Freezes the final invoices of closed periods (``Invoicing/freezeClosedPeriods(lookback:)``)
/// at start and then every `interval`, so that a final invoice exists because its period
/// closed, never because someone read it. A failed run (a full ledger disk) is logged and
/// retried at the next interval; reads meanwhile price the final invoice without storing it.
public struct InvoiceFreezer: Service {
    let service: Invoicing
    let interval: Duration
    let logger: Logger

    public init(service: Invoicing, interval: Duration = .seconds(60), logger: Logger) {
        self.service = service
        self.interval = interval
        self.logger = logger
    }

    public func run() async throws {
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                let frozen = try await service.freezeClosedPeriods()
                if frozen > 0 { logger.info("final invoices frozen", metadata: ["invoices": "\(frozen)"]) }
            } catch {
                logger.error("freezing final invoices failed; retrying later", metadata: ["error": "\(error)"])
            }
            do {
                try await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) }
            } catch {
                return
            }
        }
    }
}
