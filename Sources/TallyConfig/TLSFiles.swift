/// TLS for a listener, as configured: the server's certificate chain and private key (PEM
/// files), and optionally the CA that client certificates must chain to. With a client CA every
/// client must present a certificate signed by it (mutual TLS).
public struct ServerTLSFiles: Sendable, Hashable {
    public var certificate: String
    public var privateKey: String
    public var clientCA: String?

    public init(certificate: String, privateKey: String, clientCA: String? = nil) {
        self.certificate = certificate
        self.privateKey = privateKey
        self.clientCA = clientCA
    }
}

/// TLS for a connection this process opens, as configured: the CA the server's certificate must
/// chain to (nil: the system's trust store), the name it must carry (nil: the host connected
/// to), and optionally a client certificate and key (PEM files) for mutual TLS.
public struct ClientTLSFiles: Sendable, Hashable {
    public var ca: String?
    public var serverName: String?
    public var certificate: String?
    public var privateKey: String?

    public init(ca: String? = nil, serverName: String? = nil, certificate: String? = nil, privateKey: String? = nil) {
        self.ca = ca
        self.serverName = serverName
        self.certificate = certificate
        self.privateKey = privateKey
    }
}

extension YAMLReader {
    /// A listener's `tls` block: `certificate`, `private_key` (both required), `client_ca`.
    public mutating func serverTLS(_ node: YAMLNode, _ place: String) -> ServerTLSFiles? {
        guard let fields = mapping(node, place, allowed: ["certificate", "private_key", "client_ca"]),
            let certificateNode = fields.required("certificate", &self),
            let certificate = text(certificateNode, fields.place("certificate")),
            let keyNode = fields.required("private_key", &self),
            let privateKey = text(keyNode, fields.place("private_key"))
        else { return nil }
        var files = ServerTLSFiles(certificate: certificate, privateKey: privateKey)
        if let node = fields["client_ca"] { files.clientCA = text(node, fields.place("client_ca")) }
        return files
    }

    /// A client's `tls` block: `ca`, `server_name`, `certificate` and `private_key` (these two
    /// together or not at all), every key optional.
    public mutating func clientTLS(_ node: YAMLNode, _ place: String) -> ClientTLSFiles? {
        guard let fields = mapping(node, place, allowed: ["ca", "server_name", "certificate", "private_key"]) else { return nil }
        var files = ClientTLSFiles()
        if let node = fields["ca"] { files.ca = text(node, fields.place("ca")) }
        if let node = fields["server_name"] { files.serverName = text(node, fields.place("server_name")) }
        if let node = fields["certificate"] { files.certificate = text(node, fields.place("certificate")) }
        if let node = fields["private_key"] { files.privateKey = text(node, fields.place("private_key")) }
        if (fields["certificate"] == nil) != (fields["private_key"] == nil) {
            fail(place, node, "certificate and private_key go together: give both for a client certificate, or neither")
        }
        return files
    }
}
