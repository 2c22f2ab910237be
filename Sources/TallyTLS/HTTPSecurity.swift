public import NIOCore
public import TallyClient
import TallyConfig

/// `https://`: the exchange is TLS, the server verified as ``ClientTLS`` says; any peer may have
/// it once verified.
extension ClientTLS: HTTPConnectionSecurity {
    public var isEncrypted: Bool { true }

    public func secure(_ pipeline: ChannelPipeline.SynchronousOperations, host: String) throws -> EventLoopFuture<Void>? {
        try addHandlers(to: pipeline, host: host)
    }

    public func admit(peer: SocketAddress?) throws {}

    /// The TLS of `https://` exchanges given no CA: the system's trust store, made once.
    public static let systemTrust: Result<ClientTLS, TLSSetupError> = Result { () throws(TLSSetupError) in
        try ClientTLS(ClientTLSFiles(), place: "the system trust store")
    }
}

/// `http://`: clear text, to a peer on this machine only unless `allowRemote` (the plain-TCP rule
/// every connection leaving the host follows). The peer is checked by the address connected to,
/// not by its name, before anything is written.
public struct PlaintextPolicy: HTTPConnectionSecurity {
    public var allowRemote: Bool

    public init(allowRemote: Bool) { self.allowRemote = allowRemote }

    public var isEncrypted: Bool { false }

    public func secure(_ pipeline: ChannelPipeline.SynchronousOperations, host: String) throws -> EventLoopFuture<Void>? { nil }

    public func admit(peer: SocketAddress?) throws {
        if allowRemote || peer.map(PeerAddress.isLoopback) == true { return }
        throw PlaintextRefused()
    }
}

/// Plain HTTP to a peer not on loopback, not allowed.
public struct PlaintextRefused: Error, CustomStringConvertible {
    public var description: String {
        "plain HTTP is for loopback only; use https:// (or allow plain HTTP to remote hosts explicitly)"
    }
}

extension HTTPExchange {
    /// An exchange with the server of `url` under Tally's rules: `https://` verified against
    /// `tls` (nil: the system's trust store), `http://` to loopback only unless
    /// `allowPlaintextRemote`. The URL's path is ``HTTPExchange/Target/path``.
    public init(url: Target, tls: ClientTLS?, allowPlaintextRemote: Bool) throws(TLSSetupError) {
        let security: any HTTPConnectionSecurity
        if !url.secure {
            security = PlaintextPolicy(allowRemote: allowPlaintextRemote)
        } else if let tls {
            security = tls
        } else {
            security = try ClientTLS.systemTrust.get()
        }
        self.init(host: url.host, port: url.port, security: security)
    }
}
