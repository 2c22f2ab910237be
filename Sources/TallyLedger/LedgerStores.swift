public import Logging

/// Opens a ledger from its address: the one place that knows every backend.
public enum LedgerStores {
    /// Opens (creating or migrating if needed) the store at `address`.
    public static func open(
        _ address: StoreAddress, configuration: LedgerConfiguration, logger: Logger = Logger(label: "tally.ledger")
    ) throws(LedgerError) -> any LedgerStore {
        switch address {
        case .sqlite(let path): try SQLiteLedgerStore(path: path, configuration: configuration)
        case .postgres(let postgres): try PostgresLedgerStore(address: postgres, configuration: configuration, logger: logger)
        }
    }

    /// Parses `text` (see ``StoreAddress``) and opens the store.
    public static func open(
        _ text: String, configuration: LedgerConfiguration, logger: Logger = Logger(label: "tally.ledger")
    ) throws(LedgerError) -> any LedgerStore {
        try open(StoreAddress(parsing: text), configuration: configuration, logger: logger)
    }
}
