import Foundation
import TallyConfig
import TallyTestSupport

/// A throwaway PKI made with the `openssl` binary: two CAs and the certificates the TLS tests
/// need, in a fresh temporary directory. Made once per test process (`TestPKI.shared`).
struct TestPKI: Sendable {
    let directory: String

    /// The CA every good certificate chains to, and one nobody trusts.
    var ca: String { path("ca.crt") }
    var otherCA: String { path("other-ca.crt") }

    /// Server certificates (SAN 127.0.0.1 and localhost unless named otherwise).
    static let good = "server"
    static let expired = "expired"
    static let fromOtherCA = "other-ca-server"
    static let wrongHost = "wrong-host"
    /// Client certificates: CN and DNS SAN `tls-agent`, and one for another agent id.
    static let agentClient = "client-tls-agent"
    static let otherClient = "client-someone-else"

    func certificate(_ name: String) -> String { path("\(name).crt") }
    func privateKey(_ name: String) -> String { path("\(name).key") }
    func serverFiles(_ name: String, clientCA: String? = nil) -> ServerTLSFiles {
        ServerTLSFiles(certificate: certificate(name), privateKey: privateKey(name), clientCA: clientCA)
    }

    func path(_ file: String) -> String { directory + "/" + file }

    static let shared: Result<TestPKI, PKIError> = Result { () throws(PKIError) in try TestPKI.make() }

    struct PKIError: Error, CustomStringConvertible {
        let description: String
    }

    private static let config = """
        [req]
        distinguished_name = dn
        prompt = no
        [dn]
        CN = placeholder
        [ca]
        default_ca = test_ca
        [test_ca]
        database = index.txt
        new_certs_dir = .
        serial = serial
        default_md = sha256
        policy = any_name
        unique_subject = no
        [any_name]
        commonName = supplied
        [ca_ext]
        basicConstraints = critical,CA:TRUE
        keyUsage = critical,keyCertSign,cRLSign
        subjectKeyIdentifier = hash
        [server_ext]
        basicConstraints = CA:FALSE
        keyUsage = critical,digitalSignature
        extendedKeyUsage = serverAuth
        subjectAltName = IP:127.0.0.1,DNS:localhost
        [wrong_host_ext]
        basicConstraints = CA:FALSE
        keyUsage = critical,digitalSignature
        extendedKeyUsage = serverAuth
        subjectAltName = DNS:collector.elsewhere.example
        [client_ext]
        basicConstraints = CA:FALSE
        keyUsage = critical,digitalSignature
        extendedKeyUsage = clientAuth
        subjectAltName = DNS:${ENV::CLIENT_NAME}

        """

    static func make() throws(PKIError) -> TestPKI {
        let directory = NSTemporaryDirectory() + "tally-pki-" + UUID().uuidString
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            try config.write(toFile: directory + "/openssl.cnf", atomically: true, encoding: .utf8)
            try "".write(toFile: directory + "/index.txt", atomically: true, encoding: .utf8)
            try "01\n".write(toFile: directory + "/serial", atomically: true, encoding: .utf8)
        } catch {
            throw PKIError(description: "cannot prepare \(directory): \(error)")
        }
        let pki = TestPKI(directory: directory)
        try pki.makeCA("ca", "Tally Test CA")
        try pki.makeCA("other-ca", "Somebody Else's CA")
        try pki.issue(good, cn: "localhost", by: "ca", extensions: "server_ext")
        try pki.issue(fromOtherCA, cn: "localhost", by: "other-ca", extensions: "server_ext")
        try pki.issue(wrongHost, cn: "collector.elsewhere.example", by: "ca", extensions: "wrong_host_ext")
        try pki.issue(agentClient, cn: "tls-agent", by: "ca", extensions: "client_ext")
        try pki.issue(otherClient, cn: "someone-else", by: "ca", extensions: "client_ext")
        // Valid for one day in 2020: signed by the right CA, for the right names, long expired.
        try pki.request(expired, cn: "localhost")
        try pki.openssl([
            "ca", "-batch", "-config", "openssl.cnf", "-cert", "ca.crt", "-keyfile", "ca.key", "-in", "\(expired).csr",
            "-out", "\(expired).crt", "-startdate", "20200101000000Z", "-enddate", "20200102000000Z", "-extensions",
            "server_ext", "-notext",
        ])
        return pki
    }

    private func makeCA(_ name: String, _ cn: String) throws(PKIError) {
        try openssl([
            "req", "-x509", "-config", "openssl.cnf", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "\(name).key", "-out", "\(name).crt", "-days", "2", "-subj", "/CN=\(cn)", "-extensions", "ca_ext",
        ])
    }

    private func request(_ name: String, cn: String) throws(PKIError) {
        try openssl([
            "req", "-new", "-config", "openssl.cnf", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "\(name).key", "-out", "\(name).csr", "-subj", "/CN=\(cn)",
        ])
    }

    private func issue(_ name: String, cn: String, by ca: String, extensions: String) throws(PKIError) {
        try request(name, cn: cn)
        try openssl(
            [
                "x509", "-req", "-in", "\(name).csr", "-CA", "\(ca).crt", "-CAkey", "\(ca).key", "-CAcreateserial", "-days", "2",
                "-out", "\(name).crt", "-extfile", "openssl.cnf", "-extensions", extensions,
            ], environment: ["CLIENT_NAME": cn])
    }

    private func openssl(_ arguments: [String], environment: [String: String] = [:]) throws(PKIError) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["openssl"] + arguments
        process.currentDirectoryURL = URL(fileURLWithPath: directory)
        // Every section names CLIENT_NAME; give it a value when unused.
        process.environment = ProcessInfo.processInfo.environment.merging(["CLIENT_NAME": "unused"].merging(environment) { $1 }) { $1 }
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        do {
            try ChildSpawner.run(process)  // one spawning thread: see ChildSpawner
        } catch {
            throw PKIError(description: "cannot run openssl (scripts/install-deps.sh installs it): \(error)")
        }
        let text = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw PKIError(description: "openssl \(arguments.joined(separator: " ")) failed: \(text)")
        }
    }
}
