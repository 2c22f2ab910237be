public import NIOCore
public import NIOSSL
import NIOTLS
public import TallyConfig

/// A listener's TLS, ready to use: a server context made once at start from ``ServerTLSFiles``.
/// When a client CA is configured every client must present a certificate that chains to it
/// (the handshake fails otherwise), and ``requiresClientCertificate`` is true.
public struct ServerTLS: Sendable {
    public let configuration: TLSConfiguration
    public let context: NIOSSLContext
    public let requiresClientCertificate: Bool

    /// Reads the PEM files; `place` names the config block in errors (e.g. `tls.listen`).
    public init(_ files: ServerTLSFiles, place: String) throws(TLSSetupError) {
        let chain = try PEMFile.certificates(files.certificate, place: place + ".certificate")
        let key = try PEMFile.privateKey(files.privateKey, place: place + ".private_key")
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        configuration.minimumTLSVersion = .tlsv12
        if let clientCA = files.clientCA {
            let roots = try PEMFile.certificates(clientCA, place: place + ".client_ca")
            configuration.trustRoots = .certificates(roots)
            // Client certificates carry agent ids, not host names.
            configuration.certificateVerification = .noHostnameVerification
        }
        self.requiresClientCertificate = files.clientCA != nil
        self.configuration = configuration
        self.context = try PEMFile.context(configuration, place: place)
    }
}

/// TLS for connections this process opens, ready to use: a client context made once at start
/// from ``ClientTLSFiles``. The server's certificate must chain to the configured CA (or the
/// system's trust store) and name the host connected to (or the configured `server_name`).
public struct ClientTLS: Sendable {
    public let context: NIOSSLContext
    /// The name the server's certificate must carry; nil: the host connected to.
    public let serverName: String?

    public init(_ files: ClientTLSFiles, place: String) throws(TLSSetupError) {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        configuration.certificateVerification = .fullVerification
        if let ca = files.ca {
            configuration.trustRoots = .certificates(try PEMFile.certificates(ca, place: place + ".ca"))
        }
        if let certificate = files.certificate, let privateKey = files.privateKey {
            let chain = try PEMFile.certificates(certificate, place: place + ".certificate")
            configuration.certificateChain = chain.map { .certificate($0) }
            configuration.privateKey = .privateKey(try PEMFile.privateKey(privateKey, place: place + ".private_key"))
        }
        self.serverName = files.serverName
        self.context = try PEMFile.context(configuration, place: place)
    }

    /// Adds TLS for one connection to `host` to a new channel's pipeline (call it in the channel
    /// initializer) and returns the handshake's outcome: await it before writing, so that nothing
    /// is sent before the server is verified and a failure surfaces as its TLS cause (not as a
    /// later write on a closed channel). The server's certificate must carry a DNS name equal to
    /// `serverName` or `host`, or an IP address name equal to the address connected to (NIOSSL's
    /// identity check; an IP address never goes in SNI).
    public func addHandlers(to pipeline: ChannelPipeline.SynchronousOperations, host: String) throws -> EventLoopFuture<Void> {
        let name = serverName ?? host
        let handshake = pipeline.eventLoop.makePromise(of: Void.self)
        try pipeline.addHandler(NIOSSLClientHandler(context: context, serverHostname: PeerAddress.isIPAddress(name) ? nil : name))
        try pipeline.addHandler(TLSHandshakeWatcher(handshake))
        return handshake.futureResult
    }
}

/// Completes a promise when the TLS handshake completes, fails it with the error that ends the
/// connection first (the TLS library's own, e.g. a certificate that does not verify).
final class TLSHandshakeWatcher: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    private var promise: EventLoopPromise<Void>?

    init(_ promise: EventLoopPromise<Void>) { self.promise = promise }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? TLSUserEvent, case .handshakeCompleted = event {
            promise?.succeed(())
            promise = nil
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        promise?.fail(error)
        promise = nil
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise?.fail(ChannelError.eof)
        promise = nil
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        promise?.fail(ChannelError.ioOnClosedChannel)
        promise = nil
    }
}

/// Reads PEM files into the TLS library's types, with errors that name the config key and file.
enum PEMFile {
    static func bytes(_ path: String, place: String) throws(TLSSetupError) -> [UInt8] {
        do {
            return Array(try readTextFile(path, maxBytes: 1 << 20).utf8)
        } catch {
            throw TLSSetupError(place: place, path: path, problem: "cannot be read", cause: error)
        }
    }

    static func certificates(_ path: String, place: String) throws(TLSSetupError) -> [NIOSSLCertificate] {
        let pem = try bytes(path, place: place)
        let certificates: [NIOSSLCertificate]
        do {
            certificates = try NIOSSLCertificate.fromPEMBytes(pem)
        } catch {
            throw TLSSetupError(place: place, path: path, problem: "is not a PEM certificate file", cause: error)
        }
        guard !certificates.isEmpty else {
            throw TLSSetupError(place: place, path: path, problem: "holds no PEM certificate")
        }
        return certificates
    }

    static func privateKey(_ path: String, place: String) throws(TLSSetupError) -> NIOSSLPrivateKey {
        let pem = try bytes(path, place: place)
        do {
            return try NIOSSLPrivateKey(bytes: pem, format: .pem)
        } catch {
            throw TLSSetupError(place: place, path: path, problem: "is not a PEM private key", cause: error)
        }
    }

    static func context(_ configuration: TLSConfiguration, place: String) throws(TLSSetupError) -> NIOSSLContext {
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw TLSSetupError(place: place, path: "", problem: "the certificate and key do not make a TLS context", cause: error)
        }
    }
}
