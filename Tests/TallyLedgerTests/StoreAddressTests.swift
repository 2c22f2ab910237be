import TallyCore
import TallyLedger
import Testing

/// The one parser of store addresses: what the collector, tallyctl and tally-bench accept.
@Suite struct StoreAddressTests {
    @Test func sqliteAndPostgresAddressesParse() throws {
        #expect(try StoreAddress(parsing: "sqlite:./tally-data/ledger.db") == .sqlite(path: "./tally-data/ledger.db"))
        guard
            case .postgres(let address) = try StoreAddress(
                parsing: "postgres://tally:s3cr%40t@db.internal:6432/ledger?pool_size=8&sslrootcert=/etc/ca.pem")
        else {
            Issue.record("not parsed as postgres")
            return
        }
        #expect(address.user == "tally" && address.password == "s3cr@t")
        #expect(address.host == "db.internal" && address.port == 6432 && address.database == "ledger")
        #expect(address.poolSize == 8 && address.rootCertificate == "/etc/ca.pem")
        #expect(address.tls == .verifyFull)  // not loopback: verified TLS unless told otherwise
        guard case .postgres(let local) = try StoreAddress(parsing: "postgresql://tally@127.0.0.1/tally") else {
            Issue.record("not parsed as postgres")
            return
        }
        #expect(local.port == 5432 && local.tls == .disable && local.password == nil && local.poolSize == 4)
        #expect(local.preparedStatements && !local.description.contains("prepared_statements"))
        guard case .postgres(let unnamed) = try StoreAddress(parsing: "postgres://tally@127.0.0.1/tally?prepared_statements=off") else {
            Issue.record("not parsed as postgres")
            return
        }
        #expect(!unnamed.preparedStatements && unnamed.description.contains("prepared_statements=off"))
        #expect(try StoreAddress(parsing: unnamed.description) == .postgres(unnamed))
        guard case .postgres(let v6) = try StoreAddress(parsing: "postgres://t@[::1]:5433/x?sslmode=require") else { return }
        #expect(v6.host == "::1" && v6.port == 5433 && v6.tls == .require)
    }

    @Test func thePasswordIsNeverInTheDescriptionOrAnError() throws {
        let address = try StoreAddress(parsing: "postgres://tally:hunter2hunter2@db:5432/tally")
        #expect(!address.description.contains("hunter2"))
        #expect(address.description.contains("tally:***@db:5432/tally"))
        let error = #expect(throws: LedgerError.self) { try StoreAddress(parsing: "postgres://tally:hunter2hunter2@db:5432/tally?pool=3") }
        #expect(error.map { !"\($0)".contains("hunter2") } == true)
        #expect(error.map { "\($0)".contains("unknown parameter 'pool'") } == true)
    }

    @Test func badAddressesSayWhatIsWrong() {
        for (text, fragment) in [
            ("mysql://x@y/z", "must be sqlite:PATH or postgres://"), ("sqlite:", "names no file"),
            ("postgres://db:5432/tally", "name the user"), ("postgres://u@db:5432", "name the database"),
            ("postgres://u@db:99999/t", "not 1 to 65535"), ("postgres://u@db/t?pool_size=0", "pool_size must be 1 to 64"),
            ("postgres://u@db/t?sslmode=prefer", "sslmode must be"),
            ("postgres://u@db/t?prepared_statements=yes", "prepared_statements must be on or off"),
        ] {
            let error = #expect(throws: LedgerError.self) { try StoreAddress(parsing: text) }
            #expect(error.map { "\($0)".contains(fragment) } == true, "\(text): \(String(describing: error))")
        }
    }

    @Test func thePasswordComesFromTheURLThenTheEnvironmentThenTheFile() throws {
        let withFile = try PostgresAddress(parsing: "postgres://tally@db/t?password_file=/run/secrets/pg")
        let file: (String) throws -> String = { path in
            #expect(path == "/run/secrets/pg")
            return "from-file\n"
        }
        #expect(try withFile.resolvedPassword(environment: [:], readFile: file) == "from-file")
        #expect(try withFile.resolvedPassword(environment: ["TALLY_STORE_PASSWORD": "from-env"], readFile: file) == "from-env")
        let inURL = try PostgresAddress(parsing: "postgres://tally:from-url@db/t?password_file=/run/secrets/pg")
        #expect(try inURL.resolvedPassword(environment: ["TALLY_STORE_PASSWORD": "from-env"], readFile: file) == "from-url")
        #expect(try PostgresAddress(parsing: "postgres://tally@db/t").resolvedPassword(environment: [:], readFile: file) == nil)
        struct Unreadable: Error {}
        #expect(throws: LedgerError.self) { try withFile.resolvedPassword(environment: [:], readFile: { _ in throw Unreadable() }) }
    }
}
