import TallyCore

/// Where a ledger lives, as given on a command line or in a config: the one parser of store
/// addresses (`--store`, `store:`), used by the collector, `tallyctl` and `tally-bench`.
///
/// - `sqlite:PATH` — the embedded store, one file.
/// - `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?PARAMETERS]` (or `postgresql://`) — a
///   shared PostgreSQL database, for one collector or a cluster. Parameters:
///   `sslmode=disable|require|verify-full` (default `disable` on loopback hosts, `verify-full`
///   elsewhere), `sslrootcert=PATH` (the CA for `verify-full`; default: the system's),
///   `pool_size=N` (connections per collector, 1–64, default 4), `password_file=PATH`,
///   `connect_timeout=SECONDS` (default 10), `prepared_statements=on|off` (default `on`: the
///   statements every batch sends are named and prepared once per connection; `off` for a
///   pooler that cannot carry named statements, such as PgBouncer before 1.21).
///   The password comes from the URL, else `TALLY_STORE_PASSWORD`, else `password_file`; it is
///   never part of ``description`` (logs show `***`).
public enum StoreAddress: Sendable, Hashable, CustomStringConvertible {
    case sqlite(path: String)
    case postgres(PostgresAddress)

    public init(parsing text: String) throws(LedgerError) {
        if text.hasPrefix("sqlite:") {
            let path = String(text.dropFirst("sqlite:".count))
            guard !path.isEmpty else { throw .invalidConfiguration("the store 'sqlite:' names no file: use sqlite:PATH") }
            self = .sqlite(path: path)
        } else if text.hasPrefix("postgres://") || text.hasPrefix("postgresql://") {
            self = .postgres(try PostgresAddress(parsing: text))
        } else {
            throw .invalidConfiguration("the store '\(Self.redact(text))' must be sqlite:PATH or postgres://USER@HOST:PORT/DATABASE")
        }
    }

    public var description: String {
        switch self {
        case .sqlite(let path): "sqlite:\(path)"
        case .postgres(let address): address.description
        }
    }

    /// `text` with anything between `://USER:` and `@` replaced, for error messages about an
    /// address that did not parse.
    static func redact(_ text: String) -> String {
        guard let scheme = text.range(of: "://"), let at = text[scheme.upperBound...].firstIndex(of: "@") else { return text }
        let userInfo = text[scheme.upperBound..<at]
        guard let colon = userInfo.firstIndex(of: ":") else { return text }
        return String(text[..<colon]) + ":***" + String(text[at...])
    }
}

/// A parsed `postgres://` store address. See ``StoreAddress``.
public struct PostgresAddress: Sendable, Hashable, CustomStringConvertible {
    public enum TLSMode: String, Sendable, Hashable {
        case disable, require
        case verifyFull = "verify-full"
    }

    public var user: String
    /// From the URL, when it carries one; see ``resolvedPassword(environment:readFile:)``.
    public var password: String?
    public var host: String
    public var port: Int
    public var database: String
    public var tls: TLSMode
    public var rootCertificate: String?
    public var poolSize: Int
    public var passwordFile: String?
    public var connectTimeout: Duration
    /// Whether the statements every batch sends are prepared once per connection.
    public var preparedStatements: Bool

    public init(parsing text: String) throws(LedgerError) {
        func fail(_ problem: String) -> LedgerError {
            .invalidConfiguration("the store '\(StoreAddress.redact(text))': \(problem)")
        }
        guard let schemeEnd = text.range(of: "://") else { throw fail("not a postgres:// URL") }
        var rest = Substring(text[schemeEnd.upperBound...])
        var query = Substring("")
        if let mark = rest.firstIndex(of: "?") {
            query = rest[rest.index(after: mark)...]
            rest = rest[..<mark]
        }
        guard let at = rest.lastIndex(of: "@") else { throw fail("name the user: postgres://USER@HOST:PORT/DATABASE") }
        let userInfo = rest[..<at]
        var hostPart = rest[rest.index(after: at)...]
        if let colon = userInfo.firstIndex(of: ":") {
            user = try Self.decode(userInfo[..<colon], fail)
            password = try Self.decode(userInfo[userInfo.index(after: colon)...], fail)
        } else {
            user = try Self.decode(userInfo, fail)
            password = nil
        }
        guard !user.isEmpty else { throw fail("the user is empty") }
        guard let slash = hostPart.firstIndex(of: "/") else { throw fail("name the database: postgres://USER@HOST:PORT/DATABASE") }
        database = try Self.decode(hostPart[hostPart.index(after: slash)...], fail)
        guard !database.isEmpty else { throw fail("the database is empty") }
        hostPart = hostPart[..<slash]
        if hostPart.hasPrefix("[") {
            guard let close = hostPart.firstIndex(of: "]") else { throw fail("an unclosed [ in the host") }
            host = String(hostPart[hostPart.index(after: hostPart.startIndex)..<close])
            let after = hostPart[hostPart.index(after: close)...]
            port = after.hasPrefix(":") ? try Self.port(after.dropFirst(), fail) : 5432
        } else if let colon = hostPart.lastIndex(of: ":") {
            host = String(hostPart[..<colon])
            port = try Self.port(hostPart[hostPart.index(after: colon)...], fail)
        } else {
            host = String(hostPart)
            port = 5432
        }
        guard !host.isEmpty else { throw fail("the host is empty") }
        var tls: TLSMode? = nil
        rootCertificate = nil
        poolSize = 4
        passwordFile = nil
        connectTimeout = .seconds(10)
        preparedStatements = true
        for item in query.split(separator: "&") where !item.isEmpty {
            let pair = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = String(pair[0])
            let value = pair.count > 1 ? try Self.decode(pair[1], fail) : ""
            switch key {
            case "sslmode":
                guard let mode = TLSMode(rawValue: value) else { throw fail("sslmode must be disable, require or verify-full, not '\(value)'") }
                tls = mode
            case "sslrootcert": rootCertificate = value
            case "pool_size":
                guard let size = Int(value), (1...64).contains(size) else { throw fail("pool_size must be 1 to 64, not '\(value)'") }
                poolSize = size
            case "password_file": passwordFile = value
            case "connect_timeout":
                guard let seconds = Int(value), seconds > 0 else { throw fail("connect_timeout must be a positive number of seconds") }
                connectTimeout = .seconds(seconds)
            case "prepared_statements":
                switch value {
                case "on": preparedStatements = true
                case "off": preparedStatements = false
                default: throw fail("prepared_statements must be on or off, not '\(value)'")
                }
            default:
                throw fail(
                    "unknown parameter '\(key)' (known: sslmode, sslrootcert, pool_size, password_file, connect_timeout, prepared_statements)")
            }
        }
        let loopback = host == "localhost" || host == "::1" || host.hasPrefix("127.")
        self.tls = tls ?? (loopback ? .disable : .verifyFull)
    }

    /// The password: the URL's, else `TALLY_STORE_PASSWORD`, else the first line of
    /// `password_file`; nil when none is given (trust or peer authentication).
    public func resolvedPassword(
        environment: [String: String], readFile: (String) throws -> String
    ) throws(LedgerError) -> String? {
        if let password { return password }
        if let fromEnvironment = environment["TALLY_STORE_PASSWORD"], !fromEnvironment.isEmpty { return fromEnvironment }
        guard let passwordFile else { return nil }
        let text: String
        do { text = try readFile(passwordFile) } catch {
            throw .invalidConfiguration("cannot read the store's password_file \(passwordFile): \(error)")
        }
        return String(text.split(separator: "\n", maxSplits: 1, omittingEmptySubsequences: false).first ?? "")
    }

    /// The address without its password.
    public var description: String {
        var text = "postgres://\(user)\(password == nil ? "" : ":***")@\(host.contains(":") ? "[\(host)]" : host):\(port)/\(database)"
        var parameters = ["sslmode=\(tls.rawValue)"]
        if poolSize != 4 { parameters.append("pool_size=\(poolSize)") }
        if !preparedStatements { parameters.append("prepared_statements=off") }
        if let rootCertificate { parameters.append("sslrootcert=\(rootCertificate)") }
        if let passwordFile { parameters.append("password_file=\(passwordFile)") }
        text += "?" + parameters.joined(separator: "&")
        return text
    }

    private static func port(_ text: Substring, _ fail: (String) -> LedgerError) throws(LedgerError) -> Int {
        guard let port = Int(text), (1...65_535).contains(port) else { throw fail("the port '\(text)' is not 1 to 65535") }
        return port
    }

    /// Percent-decoding (`%40` for `@` in a password).
    private static func decode(_ text: Substring, _ fail: (String) -> LedgerError) throws(LedgerError) -> String {
        guard text.contains("%") else { return String(text) }
        var bytes: [UInt8] = []
        var iterator = Array(text.utf8).makeIterator()
        while let byte = iterator.next() {
            guard byte == UInt8(ascii: "%") else {
                bytes.append(byte)
                continue
            }
            guard let high = iterator.next().flatMap(hexValue), let low = iterator.next().flatMap(hexValue) else {
                throw fail("a bad %-escape")
            }
            bytes.append(high << 4 | low)
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

private func hexValue(_ byte: UInt8) -> UInt8? {
    switch byte {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
    default: nil
    }
}
