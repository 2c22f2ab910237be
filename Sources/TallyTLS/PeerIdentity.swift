public import NIOCore
public import NIOSSL

/// Where a peer is, for the plain-TCP rule: plain TCP only between processes on this machine,
/// unless the config allows it explicitly.
public enum PeerAddress {
    /// Whether `address` is on this machine (127.0.0.0/8, ::1, an IPv4-mapped 127.x, or a Unix
    /// socket).
    public static func isLoopback(_ address: SocketAddress) -> Bool {
        switch address {
        case .v4(let v4):
            return (UInt32(bigEndian: v4.address.sin_addr.s_addr) >> 24) == 127
        case .v6:
            guard let ip = address.ipAddress else { return false }
            return ip == "::1" || ip.hasPrefix("::ffff:127.")
        case .unixDomainSocket:
            return true
        }
    }

    /// Whether `host` is an IPv4 or IPv6 address rather than a name.
    public static func isIPAddress(_ host: String) -> Bool {
        (try? SocketAddress(ipAddress: host, port: 0)) != nil
    }
}

/// The names a client certificate proves, for mapping it to an agent id: its subject common
/// name and its DNS subject alternative names.
public enum CertificateIdentity {
    public static func names(of certificate: NIOSSLCertificate) -> Set<String> {
        var names = Set(certificate.subjectName.filter { $0.type == .commonName }.map(\.value))
        for alternative in certificate._subjectAlternativeNames() where alternative.nameType == .dnsName {
            names.insert(alternative.contents.withUnsafeBufferPointer { String(decoding: $0, as: UTF8.self) })
        }
        return names
    }

    /// The names of the peer's verified certificate on `channel` (empty without one). Call it
    /// once the TLS handshake is done (after the first bytes arrived).
    public static func peerNames(on channel: any Channel) async throws -> Set<String> {
        guard let certificate = try await channel.nioSSL_peerCertificate().get() else { return [] }
        return names(of: certificate)
    }
}
